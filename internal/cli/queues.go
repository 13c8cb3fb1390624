package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/transit"
)

type queuesOptions struct {
	all  bool
	json bool
}

func newQueuesCommand(g *Globals) *cobra.Command {
	o := &queuesOptions{}
	cmd := &cobra.Command{
		Use:   "queues",
		Short: "List queues with waiting messages, bytes, capacity and % full",
		Long: `queues lists the queues of this box's host scope on the bus: the number of
waiting messages (stored, not yet acknowledged), their bytes (an estimate:
count times the scope's average stored message size), the capacity in
messages and the percentage full (the larger of messages and bytes against
their limits). Empty queues are hidden unless -a is given.

It only looks: with no bus running it starts none, creates nothing, and
exits with status 2 ("no daemon and no bus under ./state").`,
		Example: `  multimodule queues
  multimodule queues -a
  multimodule queues --json | jq '.[] | select(.percent_full > 50)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQueues(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVarP(&o.all, "all", "a", false, "include empty queues")
	cmd.Flags().BoolVar(&o.json, "json", false, "print a JSON array instead of a table")
	return cmd
}

// queueRow is one queue in `queues --json`: the same as the daemon's
// HTTP API gives (/api/v1/queues).
type queueRow = observe.Queue

func runQueues(ctx context.Context, g *Globals, o *queuesOptions, stdout io.Writer) error {
	t, err := openLookingTransit(ctx, g)
	if err != nil {
		return err
	}
	defer t.Close()
	stats, err := t.Stats(ctx, transit.QueueFilter{})
	if err != nil {
		return err
	}
	rows := []queueRow{}
	for _, s := range stats {
		if s.Msgs == 0 && !o.all {
			continue
		}
		rows = append(rows, observe.QueueOf(s.Name, s.Msgs, s.Bytes, s.Capacity.Msgs, s.Capacity.Bytes, s.Local))
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	io.WriteString(tw, "NAME\tWAITING\tBYTES\tCAPACITY\t%FULL\t\n")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t\n", r.Name, r.Waiting, r.Bytes, r.CapacityMsgs, r.PercentFull)
	}
	return tw.Flush()
}
