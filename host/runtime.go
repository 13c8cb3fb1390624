package host

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/task"
)

// The task.Runtime of the task: what its code calls.

func (r *runner) Context() context.Context { return r.ctx }
func (r *runner) Config() map[string]any   { return r.config }
func (r *runner) Logger() *slog.Logger     { return r.log }
func (r *runner) Process() string          { return r.h.opts.Process }

func (r *runner) Emit(msg message.Message) error {
	r.emitted.Add(1)
	return r.Send(RouterName, "", msg)
}

// sender describes a send by the task, while it handles the message of
// lease r.cur.
func (r *runner) sender() sender {
	return sender{from: r, lease: r.cur, canonical: r.canonical}
}

func (r *runner) Send(qname, destination string, msg message.Message) error {
	gave := r.inHand.Sending(msg)
	err := r.h.deliverFrom(r.ctx, qname, destination, msg, r.sender())
	if err != nil && gave {
		r.inHand.SendFailed()
	}
	return err
}

func (r *runner) Out(channel, text string, details map[string]any) {
	r.h.out(channel, r.name, text, details)
}

func (r *runner) Recur(name string, interval time.Duration, work func(*task.Context)) {
	if interval <= 0 {
		r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: recur %q: interval must be positive, got %v", r.name, name, interval), nil)
		return
	}
	if old, ok := r.recurs[name]; ok {
		old.work = work
		if old.interval == interval {
			return
		}
		old.stopped.Store(true)
		old.timer.Stop()
	}
	rc := &recur{name: name, interval: interval, work: work}
	r.recurs[name] = rc
	r.armRecur(rc)
}

func (r *runner) armRecur(rc *recur) {
	rc.timer = time.AfterFunc(rc.interval, func() {
		if rc.stopped.Load() || !rc.pending.CompareAndSwap(false, true) {
			return
		}
		r.post(func() {
			rc.pending.Store(false)
			if rc.stopped.Load() || r.closed {
				return
			}
			r.armRecur(rc) // next period starts now: runs never pile up
			if !r.configured || r.paused.Load() {
				return
			}
			if err := r.safeCall("recur "+rc.name, func() error { rc.work(r.tc); return nil }); err != nil {
				r.failed.Add(1)
				r.h.out(oob.ChannelError, r.name, fmt.Sprintf("task %s: recurring work %q failed: %v", r.name, rc.name, err), nil)
			}
			r.touched()
		})
	})
}

func (r *runner) StopRecur(name string) {
	if rc, ok := r.recurs[name]; ok {
		rc.stopped.Store(true)
		rc.timer.Stop()
		delete(r.recurs, name)
	}
}

func (r *runner) StopRecurs() { r.stopRecurs() }

func (r *runner) stopRecurs() {
	for name := range r.recurs {
		r.StopRecur(name)
	}
}

var _ task.Runtime = (*runner)(nil)
