package daemon

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/placement"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/transit"
)

// placedTasks runs this box's share of the placed tasks (configs with
// host, hosts or placement): the cluster scope's Transit, the Runner and
// the Manager of package placement. They are opened when the config
// first has a placed task, so that a daemon without any costs nothing
// (no second bus connection, no heartbeat); from then on until the
// daemon exits this box is a live box of the cluster. One goroutine
// (run) opens them and gives the Manager each new config.
type placedTasks struct {
	d    *Daemon
	kick chan struct{}

	mu     sync.Mutex // guards the four below, each set once
	tr     *transit.Transit
	runner *placement.TaskRunner
	mgr    *placement.Manager
	closed bool // close ran: nothing more is opened
}

func newPlacedTasks(d *Daemon) *placedTasks {
	return &placedTasks{d: d, kick: make(chan struct{}, 1)}
}

// changed is told that a task's config changed: the Manager is given the
// configs again (opening the placement first if it is the first placed
// task).
func (p *placedTasks) changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// placementRetry is how long run waits before it tries again to open the
// placement (the bus not there, say).
const placementRetry = 2 * time.Second

// run opens the placement once a placed task is configured and gives the
// Manager the configs at each change, until ctx ends; then it closes
// the Manager (which stops the tasks this box runs, saving their
// checkpoints, and releases their leases), the Runner and the Transit,
// in this order, before the host shuts down.
func (p *placedTasks) run(ctx context.Context) {
	defer p.close()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-retry:
			retry = nil
		}
		configs := p.d.host.Configs()
		if p.manager() == nil {
			if !anyPlaced(configs) {
				continue
			}
			if err := p.open(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				p.d.out(oob.ChannelError, "main", fmt.Sprintf("placed tasks: cannot join the cluster's placement, trying again in %v: %v", placementRetry, err), nil)
				retry = time.After(placementRetry)
				continue
			}
		}
		// Bad placement keys were refused before the config was
		// recorded (checkConfig): none is left here.
		if err := p.manager().SetTasks(configs); err != nil {
			p.d.log.Error("placed tasks", "error", err)
		}
	}
}

func anyPlaced(configs map[string]map[string]any) bool {
	for _, cfg := range configs {
		if host.IsPlaced(cfg) {
			return true
		}
	}
	return false
}

func (p *placedTasks) manager() *placement.Manager {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mgr
}

// scope opens the cluster scope's Transit, creating its stream (with the
// box's replicas) if no box did yet, unless it is open. A placed task's
// config is accepted only once it is (checkConfig): a send to the task
// then always finds its queue, stored there until a box runs it.
func (p *placedTasks) scope(ctx context.Context) (*transit.Transit, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tr != nil {
		return p.tr, nil
	}
	if p.closed {
		return nil, host.ErrClosed
	}
	d := p.d
	topts := d.topts
	topts.Host = host.ClusterScope
	topts.Logger = d.log.With("scope", host.ClusterScope)
	tr, err := transit.Open(ctx, topts)
	if err != nil {
		return nil, fmt.Errorf("open the cluster scope %s on the bus: %w", host.ClusterScope, err)
	}
	p.tr = tr
	return tr, nil
}

// open opens the cluster scope (scope), the Runner and the Manager.
func (p *placedTasks) open(ctx context.Context) error {
	d := p.d
	tr, err := p.scope(ctx)
	if err != nil {
		return err
	}
	js, err := tr.JetStream()
	if err != nil {
		return err
	}
	runner, err := placement.NewRunner(placement.RunnerOptions{Bus: tr, Host: d.host, Sources: d.srcs, Logger: d.log})
	if err != nil {
		return err
	}
	// The Manager lives until close, not until ctx (which ends before
	// close runs): ending its context would stop its renewals first.
	mgr, err := placement.New(context.WithoutCancel(ctx), placement.Options{
		JS:       js,
		Box:      d.tr.Host(),
		Replicas: max(d.topts.Replicas, 1),
		Runner:   runner,
		Logger:   d.log,
		Out:      d.out,
	})
	if err != nil {
		runner.Close()
		return err
	}
	p.mu.Lock()
	p.runner, p.mgr = runner, mgr
	p.mu.Unlock()
	d.log.Info("placed tasks: this box is live in the cluster's placement", "box", d.tr.Host())
	return nil
}

// close stops the placed tasks running here (each saves its last
// checkpoint) and releases their leases, within the daemon's shutdown
// time, then closes the Runner and the cluster scope's Transit.
func (p *placedTasks) close() {
	p.mu.Lock()
	tr, runner, mgr := p.tr, p.runner, p.mgr
	p.closed = true
	p.mu.Unlock()
	if mgr != nil {
		if err := mgr.Close(p.d.shutdownContext()); err != nil {
			p.d.log.Error("placed tasks: closing the placement", "error", err)
		}
		runner.Close()
	}
	if tr != nil {
		_ = tr.Close()
	}
}

// status adjusts the daemon's task list for placed tasks: a placed task
// this box runs is listed as running here, WHERE placed, with its queue
// in the cluster scope; one it does not run is left out (the box running
// it lists it), except one that no live box may run (pinned to a box
// that is not live): the first live box by name lists it, not running,
// with the reason "waiting".
func (p *placedTasks) status(ctx context.Context, tasks []observe.Task) []observe.Task {
	p.mu.Lock()
	tr, runner, mgr := p.tr, p.runner, p.mgr
	p.mu.Unlock()
	var live []string
	if mgr != nil {
		live = mgr.Live()
	}
	running := map[string]placement.PlacedTask{}
	depth := map[string]int64{}
	if runner != nil {
		for _, pt := range runner.Tasks() {
			running[pt.Name] = pt
		}
		if len(running) > 0 {
			if stats, err := tr.Stats(ctx, transit.QueueFilter{Waiting: true, BusOnly: true}); err == nil {
				for _, q := range stats {
					depth[q.Name] = q.Msgs
				}
			}
		}
	}
	configs := p.d.host.Configs()
	seen := map[string]bool{}
	out := tasks[:0]
	for _, t := range tasks {
		if !host.IsPlaced(configs[t.Task]) {
			out = append(out, t)
			continue
		}
		if _, ok := running[t.Task]; !ok {
			if why := p.waiting(t.Task, configs[t.Task], live); why != "" {
				t.Where, t.Running, t.PID, t.StateAge = PlacePlaced, false, 0, nil
				t.Reason, t.ReasonDetail = "waiting", why
				out = append(out, t)
			}
			continue
		}
		seen[t.Task] = true
		out = append(out, placedRow(t, depth))
	}
	for _, name := range slices.Sorted(maps.Keys(running)) {
		if !seen[name] {
			out = append(out, placedRow(observe.Task{Task: name, Place: observe.PlaceInternal}, depth))
		}
	}
	return out
}

// waiting says why no live box may run placed task name (its spec names
// only boxes that are not live), when this box is the one to say so (the
// first live box by name); "" otherwise.
func (p *placedTasks) waiting(name string, cfg map[string]any, live []string) string {
	if len(live) == 0 || live[0] != p.d.tr.Host() {
		return ""
	}
	spec, placed, err := placement.ParseSpec(name, cfg)
	if err != nil || !placed {
		return ""
	}
	if _, ok := spec.Choose(name, live); ok {
		return ""
	}
	if spec.Kind == placement.Pinned {
		return fmt.Sprintf("pinned to box %s, which is not live", spec.Hosts[0])
	}
	return fmt.Sprintf("none of boxes %s is live", strings.Join(spec.Hosts, ", "))
}

// PlacePlaced is the WHERE of a placed task in the status: run by this
// box's daemon because it holds the task's lease.
const PlacePlaced = "placed"

func placedRow(t observe.Task, depth map[string]int64) observe.Task {
	t.Where, t.Running, t.PID = PlacePlaced, true, os.Getpid()
	t.Queue = depth[t.Task]
	t.StateAge = nil // its state is in the cluster's checkpoint, not here
	return t
}
