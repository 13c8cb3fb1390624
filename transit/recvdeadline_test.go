package transit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// lateCtx is a context whose deadline has passed but whose timer has not
// fired yet: Err is nil until done is closed. A real context.WithTimeout
// is in this state for a moment after its deadline, and a receive that
// ends in that moment must not report the deadline before ctx does.
type lateCtx struct {
	context.Context
	deadline time.Time
	done     chan struct{}
}

func (c *lateCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *lateCtx) Done() <-chan struct{}       { return c.done }
func (c *lateCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// TestReceiveDeadlineAgreesWithContext: when Receive says the deadline
// passed, ctx says so too. The CLI's recv builds its "no message within"
// answer from ctx, and crashed when the two disagreed.
func TestReceiveDeadlineAgreesWithContext(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	base := ctxT(t, 30*time.Second)
	ctx := &lateCtx{Context: base, deadline: time.Now().Add(-time.Millisecond), done: make(chan struct{})}
	fire := time.AfterFunc(50*time.Millisecond, func() { close(ctx.done) })
	defer fire.Stop()
	_, err := tr.Receive(ctx, "late.q")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: got %v, want the deadline", err)
	}
	if ctx.Err() == nil {
		t.Fatalf("Receive reported %v while its context was still live", err)
	}
}
