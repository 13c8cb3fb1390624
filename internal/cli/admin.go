package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

func init() {
	register(newFailsafeCommand)
	register(newUnfailsafeCommand)
	register(newStatusCommand)
	register(newConfigCommand)
}

// sendControl puts one control message on the daemon's control queue.
func sendControl(ctx context.Context, g *Globals, queue string, body map[string]any) error {
	tr, err := openTransit(ctx, g)
	if err != nil {
		return err
	}
	defer tr.Close()
	return tr.Send(ctx, queue, message.Message{".multimodule": body}, transit.SendOptions{})
}

func controlQueueFlag(cmd *cobra.Command, q *string) {
	cmd.Flags().StringVarP(q, "control-queue", "q", "MultiModule_control", "the daemon's control queue")
}

func newFailsafeCommand(g *Globals) *cobra.Command {
	var q, reason string
	cmd := &cobra.Command{
		Use:   "failsafe TASK",
		Short: "Stop a task by hand until it is unfailsafed",
		Long: `failsafe asks the daemon to failsafe TASK, as the monitor does when a
task misbehaves: <state>/TASK.failsafe is written with the reason, the
task's process is killed (an internal task is unloaded), and its messages
wait in its queue until "multimodule unfailsafe TASK".`,
		Example: `  multimodule failsafe Example1 --reason "maintenance"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return sendControl(ctx, g, q, map[string]any{"control": []any{map[string]any{"type": "failsafe", "task": args[0], "reason": reason}}})
		},
	}
	controlQueueFlag(cmd, &q)
	cmd.Flags().StringVar(&reason, "reason", "by hand", "why (kept in the failsafe file)")
	return cmd
}

func newUnfailsafeCommand(g *Globals) *cobra.Command {
	var q string
	cmd := &cobra.Command{
		Use:   "unfailsafe TASK",
		Short: "Bring a failsafed task back; it drains its queue",
		Long: `unfailsafe asks the daemon to clear the failsafe of TASK: the failsafe
file is removed, the task's monitoring history starts over, and the task
is started again (inside the daemon or as its own process, as its config
says) and handles the messages that waited for it.`,
		Example: `  multimodule unfailsafe Example1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return sendControl(ctx, g, q, map[string]any{"control": []any{map[string]any{"type": "unfailsafe", "task": args[0]}}})
		},
	}
	controlQueueFlag(cmd, &q)
	return cmd
}

func newConfigCommand(g *Globals) *cobra.Command {
	var q string
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the daemon's config",
	}
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Check a config file and send it to the daemon",
		Long: `config apply parses FILE (YAML or JSON, bare or wrapped as
{".multimodule": {"config": ...}}) and, if it is valid, sends it to the
daemon's control queue. The tasks it names get the new config; the
others keep theirs. A file that does not parse is refused with the line
and column, and nothing is sent.`,
		Example: `  multimodule config apply examples/tutorial.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := configfile.Load(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := sendControl(ctx, g, q, map[string]any{"config": cfg}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sent the config of %d task(s): %s\n", len(cfg), strings.Join(slices.Sorted(maps.Keys(cfg)), ", "))
			return nil
		},
	}
	controlQueueFlag(apply, &q)
	cmd.AddCommand(apply)
	return cmd
}

// TaskStatus is one line of `multimodule status`.
type TaskStatus struct {
	Task      string            `json:"task"`
	Where     string            `json:"where"` // internal, external or "-" (no process yet)
	PID       int               `json:"pid,omitempty"`
	Running   bool              `json:"running"`
	Failsafed bool              `json:"failsafed"`
	Why       string            `json:"failsafe_reason,omitempty"`
	StateAge  *float64          `json:"state_age_seconds,omitempty"`
	Queue     int64             `json:"queue_depth"`
	Alerts    map[string]string `json:"alerts,omitempty"`
}

func newStatusCommand(g *Globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "One line per task: where it runs, pid, failsafe, state age, queue depth, alerts",
		Long: `status reads the state directory (and the bus, for queue depths) and
prints one line per task: internal or external, the pid of the process
hosting it and whether that very process still runs, whether it is
failsafed and why, how old its saved state is, how many messages wait in
its queue, and its current alert levels (other than ok).`,
		Example: `  multimodule status
  multimodule status --json | jq '.[] | select(.failsafed)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			lines, err := collectStatus(ctx, g)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(lines)
			}
			printStatus(cmd.OutOrStdout(), lines)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func collectStatus(ctx context.Context, g *Globals) ([]TaskStatus, error) {
	st, err := store.Open(g.StateDir)
	if err != nil {
		return nil, err
	}
	names, err := st.Tasks()
	if err != nil {
		return nil, err
	}
	depth := map[string]int64{}
	if tr, err := openTransit(ctx, g); err == nil {
		if stats, err := tr.Stats(ctx); err == nil {
			for _, q := range stats {
				depth[q.Name] = q.Msgs
			}
		}
		tr.Close()
	}
	levels, _ := st.LoadLevels()
	var out []TaskStatus
	for _, name := range names {
		if name == "main" {
			continue
		}
		ts := TaskStatus{Task: name, Where: "-", Queue: depth[name], Alerts: levels[name]}
		if cfg, _ := st.LoadConfig(name); cfg != nil && message.Truthy(cfg["is_external"]) {
			ts.Where = "external"
		} else if cfg != nil {
			ts.Where = "internal"
		}
		if s, _ := st.LoadStatus(name); s != nil {
			ts.PID = s.PID
			ts.Running = s.Running()
			if s.External {
				ts.Where = "external"
			}
		}
		if fs, _ := st.ReadFailsafe(name); fs != nil {
			ts.Failsafed = true
			ts.Why, _ = fs["summary"].(string)
			ts.Running = false
		}
		if state, _ := st.LoadState(name); state != nil {
			if t, ok := store.SaveTS(state); ok {
				age := time.Since(t).Seconds()
				ts.StateAge = &age
			}
		}
		out = append(out, ts)
	}
	return out, nil
}

func printStatus(w io.Writer, lines []TaskStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tWHERE\tPID\tRUNNING\tFAILSAFE\tSTATE AGE\tQUEUE\tALERTS")
	for _, l := range lines {
		pid, age, fs := "-", "-", "-"
		if l.PID > 0 {
			pid = fmt.Sprint(l.PID)
		}
		if l.StateAge != nil {
			age = (time.Duration(*l.StateAge * float64(time.Second))).Round(time.Second).String()
		}
		if l.Failsafed {
			fs = "yes: " + l.Why
		}
		var alerts []string
		for _, k := range slices.Sorted(maps.Keys(l.Alerts)) {
			alerts = append(alerts, k+"="+l.Alerts[k])
		}
		a := strings.Join(alerts, " ")
		if a == "" {
			a = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%d\t%s\n", l.Task, l.Where, pid, l.Running, fs, age, l.Queue, a)
	}
	tw.Flush()
}
