package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// HostTaskStatus is one line of `multimodule status --all-hosts`: a
// task and the box (host scope) whose daemon runs it.
type HostTaskStatus struct {
	Host string `json:"host"`
	TaskStatus
}

// statusAllHosts asks the daemon of every host scope on the bus for its
// tasks' status (a control message with a control item of type status,
// sent to the host's control queue) and prints the answers, one line
// per task with its host. A host that does not answer within wait is
// named on standard error; then the exit status is ExitNoDaemon.
func statusAllHosts(ctx context.Context, g *Globals, wait time.Duration, asJSON bool, stdout io.Writer) error {
	tr, err := openTransit(ctx, g)
	if err != nil {
		return err
	}
	defer tr.Close()
	scopes, err := tr.Hosts(ctx)
	if err != nil {
		return err
	}
	// The cluster scope holds the queues of placed tasks: no daemon
	// answers there; each box lists the placed tasks it runs.
	hosts := scopes[:0]
	for _, h := range scopes {
		if h != host.ClusterScope {
			hosts = append(hosts, h)
		}
	}
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("reply id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	replyTo := daemon.ReplyQueuePrefix + id
	deadline := time.Now().Add(wait)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = tr.DeleteQueue(dctx, replyTo)
	}()
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// The reply queue is this command's own: it owns it while it waits
	// (the answers come at about the same time).
	cons, err := tr.Consume(sctx, replyTo)
	if err != nil {
		return fmt.Errorf("own the reply queue: %w", err)
	}
	defer cons.Stop()
	asked := map[string]bool{}
	for _, h := range hosts {
		body := map[string]any{
			"control":    []any{map[string]any{"type": "status"}},
			"reply_to":   replyTo,
			"reply_host": tr.Host(),
			"id":         id,
			"reply_by":   float64(deadline.UnixNano()) / 1e9,
		}
		if err := tr.Send(sctx, daemon.DefaultControlQueue, message.Message{".multimodule": body}, transit.SendOptions{Destination: h}); err != nil {
			return fmt.Errorf("ask host %s: %w", h, err)
		}
		asked[h] = true
	}
	answers := map[string][]HostTaskStatus{}
	for len(answers) < len(asked) {
		var d *transit.Delivery
		select {
		case d = <-cons.C():
		case <-sctx.Done():
		}
		if d == nil {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("waiting for the daemons' answers: %w", err)
			}
			break // --wait is over: the silent hosts are named below
		}
		_ = d.Ack() // the queue is deleted at the end anyway
		v, err := daemon.ParseVerdict(d.Msg)
		if err != nil || v.ID != id || !asked[v.Host] {
			continue
		}
		lines := []HostTaskStatus{}
		for _, t := range v.Status {
			lines = append(lines, HostTaskStatus{Host: v.Host, TaskStatus: TaskStatus{Task: t.Task, Where: t.Where, PID: t.PID, Running: t.Running,
				Failsafed: t.Failsafed, Why: t.Why, StateAge: t.StateAge, Queue: t.Queue, Alerts: t.Alerts,
				Reason: t.Reason, ReasonDetail: t.ReasonDetail, RetryAt: t.RetryAt}})
		}
		answers[v.Host] = lines
	}
	var all []HostTaskStatus
	var silent []string
	for _, h := range hosts {
		if lines, ok := answers[h]; ok {
			all = append(all, lines...)
		} else {
			silent = append(silent, h)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if all == nil {
			all = []HostTaskStatus{}
		}
		if err := enc.Encode(all); err != nil {
			return err
		}
	} else {
		printHostStatus(stdout, all)
	}
	if len(silent) > 0 {
		slices.Sort(silent)
		return &ExitError{Code: ExitNoDaemon, Err: fmt.Errorf("no answer within %v from host %s (no daemon consuming its control queue %s?)", wait, strings.Join(silent, ", "), daemon.DefaultControlQueue)}
	}
	return nil
}
