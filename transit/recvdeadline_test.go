package transit_test

import (
	"context"
	"errors"
	"github.com/multimodule/multimodule/message"
	"sync"
	"syscall"
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

// TestTryReceiveWaitsForASlowBus: a receive that does not wait says
// "empty" only when the bus says so. Here the bus process is stopped
// (SIGSTOP) just as the receive pulls a message that waits: the pull
// goes unanswered for longer than the client waits for a no-wait pull,
// and the receive must neither call the queue empty nor lose the
// message; once the bus runs again, it returns it.
func TestTryReceiveWaitsForASlowBus(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	if _, err := tr.TryReceive(ctx, "slow.q"); !errors.Is(err, transit.ErrEmpty) {
		t.Fatalf("TryReceive of an empty queue: got %v, want ErrEmpty", err)
	}
	if err := tr.Send(ctx, "slow.q", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	frozen := make(chan struct{})
	defer transit.SetBeforeReceivePull(func() {
		once.Do(func() {
			// Every thread stopped before the pull goes out.
			if err := stopProcessWait(bi.PID, 30*time.Second); err != nil {
				t.Errorf("stop the bus: %v", err)
			}
			close(frozen)
		})
	})()
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			syscall.Kill(bi.PID, syscall.SIGCONT)
		}
	}
	defer thaw()

	type result struct {
		m   message.Message
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := tr.TryReceive(ctx, "slow.q")
		res <- result{m, err}
	}()
	select {
	case <-frozen:
	case r := <-res:
		t.Fatalf("TryReceive returned %v, %v without pulling", r.m, r.err)
	}
	// The client gives up on a no-wait pull after 1 s of silence; the
	// bus stays stopped for 3 s.
	select {
	case r := <-res:
		t.Fatalf("while the bus was stopped, TryReceive returned %v, %v; want it to wait for the bus' answer", r.m, r.err)
	case <-time.After(3 * time.Second):
	}
	thaw()
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("TryReceive after the bus resumed: %v", r.err)
		}
		if n, _ := message.Int(r.m["n"]); n != 1 {
			t.Fatalf("TryReceive: got %v, want n=1", r.m)
		}
	case <-ctx.Done():
		t.Fatal("TryReceive did not return after the bus resumed")
	}
}
