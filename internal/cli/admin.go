package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// Exit codes of the commands that wait for the daemon's verdict.
const (
	ExitRefused  = 1 // the daemon refused something, or a task could not be loaded
	ExitNoDaemon = 2 // no verdict in time: no daemon consumes the control queue
)

// askDaemon puts one control message on the daemon's control queue and
// waits up to wait for the daemon's verdict: the message names a reply
// queue of its own (reply_to), an id, and until when it waits
// (reply_by); the daemon answers there once the message is applied. The
// reply queue is deleted afterwards.
func askDaemon(ctx context.Context, g *Globals, queue string, body map[string]any, wait time.Duration) (daemon.Verdict, error) {
	if err := transit.ValidateQueueName(queue); err != nil {
		return daemon.Verdict{}, fmt.Errorf("-q: %w", err)
	}
	tr, err := openTransit(ctx, g)
	if err != nil {
		return daemon.Verdict{}, err
	}
	defer tr.Close()
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return daemon.Verdict{}, fmt.Errorf("reply id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	replyTo := daemon.ReplyQueuePrefix + id
	deadline := time.Now().Add(wait)
	body["reply_to"] = replyTo
	body["id"] = id
	body["reply_by"] = float64(deadline.UnixNano()) / 1e9
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = tr.DeleteQueue(dctx, replyTo)
	}()
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := tr.Send(sctx, queue, message.Message{".multimodule": body}, transit.SendOptions{}); err != nil {
		return daemon.Verdict{}, err
	}
	for {
		m, err := tr.Receive(sctx, replyTo)
		if err != nil {
			// The receive may see the deadline pass before sctx's timer
			// fires (sctx.Err() still nil): both mean no verdict in time.
			if ctx.Err() == nil && (sctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)) {
				return daemon.Verdict{}, &ExitError{Code: ExitNoDaemon, Err: noVerdict(ctx, tr, queue, wait)}
			}
			return daemon.Verdict{}, fmt.Errorf("waiting for the daemon's verdict: %w", err)
		}
		v, err := daemon.ParseVerdict(m)
		if err == nil && v.ID == id {
			return v, nil
		}
	}
}

// noVerdict says why no verdict came: the message still waits in the
// control queue (no daemon consumes it), or a daemon took it and is still
// applying it (a large config).
func noVerdict(ctx context.Context, tr *transit.Transit, queue string, wait time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := tr.Stat(sctx, queue); err == nil && st.Msgs == 0 {
		return fmt.Errorf("no verdict within %v: the daemon took the message from the control queue %s but has not answered (still applying it? see its error channel, or try a longer --wait)", wait, queue)
	}
	return fmt.Errorf("no daemon is consuming the control queue %s: no verdict within %v (the message waits in the queue and is applied when a daemon starts)", queue, wait)
}

// report prints a verdict; a refusal or a task that could not be loaded
// is an ExitError.
func report(w io.Writer, v daemon.Verdict) error {
	for _, name := range slices.Sorted(maps.Keys(v.Tasks)) {
		tv := v.Tasks[name]
		switch tv.Verdict {
		case daemon.VerdictAccepted:
			fmt.Fprintf(w, "%s: accepted\n", name)
		case daemon.VerdictNotLoaded:
			fmt.Fprintf(w, "%s: config saved, but the task is not loaded: %s\n", name, tv.Reason)
		default:
			fmt.Fprintf(w, "%s: refused (config not applied): %s\n", name, tv.Reason)
		}
	}
	for _, n := range v.Notes {
		fmt.Fprintln(w, n)
	}
	if v.OK {
		return nil
	}
	msg := "the daemon refused it"
	if len(v.Errors) > 0 {
		msg += ": " + strings.Join(v.Errors, "; ")
	} else {
		msg = "the daemon did not accept every task (see above)"
	}
	return &ExitError{Code: ExitRefused, Err: errors.New(msg)}
}

func controlQueueFlag(cmd *cobra.Command, q *string, wait *time.Duration) {
	cmd.Flags().StringVarP(q, "control-queue", "q", daemon.DefaultControlQueue, "the daemon's control queue")
	cmd.Flags().DurationVar(wait, "wait", 30*time.Second, "how long to wait for the daemon's verdict")
}

// verdictHelp ends the help of the commands that wait for a verdict.
const verdictHelp = `

It waits (--wait) for the daemon's verdict and prints it. The exit status
is 0 when the daemon accepted everything, 1 when it refused something
(or a task could not be loaded), 2 when no verdict came in time: no
daemon consumes the control queue (the message stays there and is
applied when a daemon starts).`

func newFailsafeCommand(g *Globals) *cobra.Command {
	var q, reason string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "failsafe TASK",
		Short: "Stop a task by hand until it is unfailsafed",
		Long: `failsafe asks the daemon to failsafe TASK, as the monitor does when a
task misbehaves: <state>/TASK.failsafe is written with the reason, the
task's process is killed (an internal task is unloaded), and its messages
wait in its queue until "multimodule unfailsafe TASK". The daemon refuses
reserved names (main, its queues) and names that are neither configured
nor known.` + verdictHelp,
		Example: `  multimodule failsafe Example1 --reason "maintenance"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := askDaemon(cmd.Context(), g, q, map[string]any{"control": []any{map[string]any{"type": "failsafe", "task": args[0], "reason": reason}}}, wait)
			if err != nil {
				return err
			}
			if err := report(cmd.OutOrStdout(), v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: failsafed\n", args[0])
			return nil
		},
	}
	controlQueueFlag(cmd, &q, &wait)
	cmd.Flags().StringVar(&reason, "reason", "by hand", "why (kept in the failsafe file)")
	return cmd
}

func newUnfailsafeCommand(g *Globals) *cobra.Command {
	var q string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "unfailsafe TASK",
		Short: "Bring a failsafed task back; it drains its queue",
		Long: `unfailsafe asks the daemon to clear the failsafe of TASK: the failsafe
file is removed, the task's monitoring history starts over, and the task
is started again (inside the daemon or as its own process, as its config
says) and handles the messages that waited for it.` + verdictHelp,
		Example: `  multimodule unfailsafe Example1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := askDaemon(cmd.Context(), g, q, map[string]any{"control": []any{map[string]any{"type": "unfailsafe", "task": args[0]}}}, wait)
			if err != nil {
				return err
			}
			if err := report(cmd.OutOrStdout(), v); err != nil {
				return err
			}
			if len(v.Notes) == 0 { // a note says why nothing was done
				fmt.Fprintf(cmd.OutOrStdout(), "%s: unfailsafed\n", args[0])
			}
			return nil
		},
	}
	controlQueueFlag(cmd, &q, &wait)
	return cmd
}

func newConfigCommand(g *Globals) *cobra.Command {
	var q string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the daemon's config",
		Example: `  # send a whole config file to the running daemon and wait for its verdict
  multimodule -s ./state config apply my-config.yaml

  # change one task's config without a file
  multimodule -s ./state send MultiModule_control '{".multimodule":{"config":{"Example1":{"outstr":"hi"}}}}'`,
	}
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Check a config file and send it to the daemon",
		Long: `config apply parses FILE (YAML or JSON, bare or wrapped as
{".multimodule": {"config": ...}}) and, if it is valid, sends it to the
daemon's control queue. The tasks it names get the new config; the
others keep theirs. A file that does not parse is refused with the line
and column, and nothing is sent.

The verdict is one line per task: accepted; refused (the task keeps its
previous config: a reserved name, is_external for a task that no -p
source has, a bad framework key); or config saved but the task not
loaded (an unknown task, a load error), with the reason.` + verdictHelp,
		Example: `  multimodule config apply examples/tutorial.yaml

  # JSON works too, bare or wrapped in {".multimodule": {"config": ...}}
  multimodule -s ./state config apply config.json

  # wait longer for a busy daemon's verdict
  multimodule -s ./state config apply big.yaml --wait 2m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := configfile.Load(args[0])
			if err != nil {
				return err
			}
			v, err := askDaemon(cmd.Context(), g, q, map[string]any{"config": cfg}, wait)
			if err != nil {
				return err
			}
			return report(cmd.OutOrStdout(), v)
		},
	}
	controlQueueFlag(apply, &q, &wait)
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
	// Why the task does not run, when the daemon knows: "failsafe",
	// "unknown task", "load error" or "back-off"; the detail, and when it
	// is tried again (unix seconds).
	Reason       string   `json:"reason,omitempty"`
	ReasonDetail string   `json:"reason_detail,omitempty"`
	RetryAt      *float64 `json:"retry_at,omitempty"`
}

// statusHeader is what `status` says of the daemon and the bus before
// the table.
type statusHeader struct {
	daemon   store.Status
	daemonUp bool
	busPID   int
	busURL   string
	nats     string // the NATS server in use instead of the embedded bus
	busErr   error  // why queue depths are missing
}

func newStatusCommand(g *Globals) *cobra.Command {
	var (
		asJSON, allHosts bool
		wait             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Whether the daemon runs, and one line per task: where, pid, failsafe, state age, queue depth, alerts",
		Long: `status reads the state directory (and the bus, for queue depths). It
first says whether the daemon runs (its pid) and where the bus is, then
prints one line per task: internal or external, the pid of the process
hosting it and whether that very process still runs, whether it is
failsafed and why, how old its saved state is, how many messages wait in
its queue, and its current alert levels (other than ok).

It only looks: it never creates the state directory and never starts the
bus (with no bus running, queue depths show as "-"). Exit status: 0 when
the daemon runs; 2 when it does not (the table is still printed, after
"daemon: NOT RUNNING"), or when the state directory does not exist ("no
daemon and no bus under ./state", nothing printed on standard output).
With --json the table is a JSON array on standard output and the daemon
line goes to standard error when the daemon does not run.

With --all-hosts it asks the daemon of every host scope on the bus (the
boxes of a NATS cluster, see docs/cluster.md) over its control queue and
lists every task of every box, with a HOST column (--json: a "host" key);
it does not read the state directory. A host whose daemon does not answer
within --wait is named on standard error, and the exit status is 2.`,
		Example: `  multimodule status
  multimodule status -s /var/lib/multimodule
  multimodule status --json | jq '.[] | select(.failsafed)'
  multimodule --nats nats://n1:4222,nats://n2:4222 --host box1 status --all-hosts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if allHosts {
				return statusAllHosts(cmd.Context(), g, wait, asJSON, cmd.OutOrStdout())
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			st, err := openExistingStore(g)
			if err != nil {
				return err
			}
			if st == nil {
				return noBusError(g)
			}
			lines, hdr, err := collectStatus(ctx, g, st)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(lines); err != nil {
					return err
				}
			} else {
				printHeader(cmd.OutOrStdout(), g, hdr)
				printStatus(cmd.OutOrStdout(), lines)
			}
			if !hdr.daemonUp {
				return &ExitError{Code: ExitNoDaemon, Err: fmt.Errorf("no daemon is running under %s (start it with multimodule -s %s …)", stateDir(g), stateDir(g))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&allHosts, "all-hosts", false, "ask the daemon of every host on the bus (a NATS cluster's boxes) and list every task with its host")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Second, "with --all-hosts: how long to wait for the daemons' answers")
	return cmd
}

// printHeader prints the daemon and bus lines of `status`.
func printHeader(w io.Writer, g *Globals, h statusHeader) {
	switch {
	case h.daemonUp:
		fmt.Fprintf(w, "daemon: running, pid %d\n", h.daemon.PID)
	case h.daemon.PID > 0:
		fmt.Fprintf(w, "daemon: NOT RUNNING (last pid %d; start it with multimodule -s %s …)\n", h.daemon.PID, stateDir(g))
	default:
		fmt.Fprintf(w, "daemon: NOT RUNNING (start it with multimodule -s %s …)\n", stateDir(g))
	}
	switch {
	case h.nats != "":
		fmt.Fprintf(w, "bus: NATS %s\n", h.nats)
	case h.busPID > 0:
		fmt.Fprintf(w, "bus: embedded, pid %d, %s\n", h.busPID, h.busURL)
	default:
		fmt.Fprintf(w, "bus: not running (queue depths unknown)\n")
	}
	if h.busErr != nil && (h.busPID > 0 || h.nats != "") {
		fmt.Fprintf(w, "bus: %v\n", h.busErr)
	}
	fmt.Fprintln(w)
}

func collectStatus(ctx context.Context, g *Globals, st *store.Store) ([]TaskStatus, statusHeader, error) {
	var hdr statusHeader
	if m, _ := st.LoadStatus("main"); m != nil {
		hdr.daemon, hdr.daemonUp = *m, m.Running()
	}
	hdr.nats = daemon.RedactNATSURL(g.NATSURL)
	if hdr.nats == "" && hdr.daemonUp {
		hdr.nats = hdr.daemon.NATS
	}
	depth := map[string]int64{}
	known := false
	if tr, err := openLookingTransit(ctx, g); err == nil {
		if stats, err := tr.Stats(ctx, transit.QueueFilter{}); err == nil {
			known = true
			for _, q := range stats {
				depth[q.Name] = q.Msgs
			}
		} else {
			hdr.busErr = err
		}
		tr.Close()
		if g.NATSURL == "" {
			if bi, err := transit.ReadBusInfo(transportDir(g)); err == nil {
				hdr.busPID, hdr.busURL = bi.PID, bi.URL
			}
		}
	} else {
		hdr.busErr = err
	}
	levels, _ := st.LoadLevels()
	// The daemon's reasons hold while it runs.
	reasons := store.Reasons{}
	if hdr.daemonUp {
		reasons, _ = st.LoadReasons()
	}
	// The same gathering as the daemon's HTTP API (/api/v1/tasks).
	tasks, err := observe.CollectStatus(st, depth, levels, reasons)
	if err != nil {
		return nil, hdr, err
	}
	out := make([]TaskStatus, 0, len(tasks))
	for _, t := range tasks {
		ts := TaskStatus{Task: t.Task, Where: t.Where, PID: t.PID, Running: t.Running,
			Failsafed: t.Failsafed, Why: t.Why, StateAge: t.StateAge, Queue: t.Queue, Alerts: t.Alerts,
			Reason: t.Reason, ReasonDetail: t.ReasonDetail, RetryAt: t.RetryAt}
		if !known {
			ts.Queue = -1 // no bus to ask
		}
		if cfg, err := st.LoadConfig(t.Task); err == nil && host.IsPlaced(cfg) {
			// Run by whichever box holds its lease: the state directory
			// does not say which (status --all-hosts asks the daemons).
			ts.Where, ts.PID, ts.Running, ts.StateAge, ts.Queue = daemon.PlacePlaced, 0, false, nil, -1
			ts.Reason, ts.ReasonDetail, ts.RetryAt = "placed", "runs on the box holding its lease: see status --all-hosts", nil
		}
		out = append(out, ts)
	}
	return out, hdr, nil
}

func printStatus(w io.Writer, lines []TaskStatus) { printStatusTable(w, lines, nil) }

// printHostStatus prints the table of `status --all-hosts`: the host
// first.
func printHostStatus(w io.Writer, lines []HostTaskStatus) {
	ts := make([]TaskStatus, len(lines))
	for i, l := range lines {
		ts[i] = l.TaskStatus
	}
	printStatusTable(w, ts, func(i int) string { return lines[i].Host })
}

// printStatusTable prints the status table, with a HOST column first
// when host is not nil.
func printStatusTable(w io.Writer, lines []TaskStatus, host func(int) string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if host != nil {
		fmt.Fprint(tw, "HOST\t")
	}
	fmt.Fprintln(tw, "TASK\tWHERE\tPID\tRUNNING\tFAILSAFE\tSTATE AGE\tQUEUE\tALERTS\tREASON")
	for i, l := range lines {
		if host != nil {
			fmt.Fprintf(tw, "%s\t", host(i))
		}
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
		queue := "-"
		if l.Queue >= 0 {
			queue = fmt.Sprint(l.Queue)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", l.Task, l.Where, pid, l.Running, fs, age, queue, a, reasonText(l))
	}
	tw.Flush()
}

// reasonText is the REASON column: why the task does not run.
func reasonText(l TaskStatus) string {
	switch {
	case l.Reason == "":
		return "-"
	case l.Reason == "failsafe":
		return "failsafe" // the FAILSAFE column says why
	}
	text := l.Reason
	if l.RetryAt != nil {
		at := time.Unix(0, int64(*l.RetryAt*1e9))
		if l.Reason == "back-off" {
			text += " until " + at.Format(time.TimeOnly)
		} else {
			text += " (retry at " + at.Format(time.TimeOnly) + ")"
		}
	}
	if l.ReasonDetail != "" {
		text += ": " + l.ReasonDetail
	}
	return text
}
