package transit_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// An asynchronous send the bus did not confirm in time is published again;
// when the first attempt was stored all the same (the bus was only slow),
// the stream drops the copy: both attempts carry the same message ID. The
// bus is stopped while the send is in its socket, for longer than the
// send waits for the confirmation, then resumed: it reads both attempts.
func TestAsyncSendPublishedAgainIsStoredOnce(t *testing.T) {
	defer transit.SetAsyncPublishTimeout(time.Second)()
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 2*time.Minute)
	const q, n = "dup.q", 10
	// The queue's consumer exists before the bus stops.
	if err := tr.SendAsync(ctx, q, message.Message{"n": 0}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(bi.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	cont := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(bi.PID, syscall.SIGCONT); err != nil {
				t.Errorf("resume the bus: %v", err)
			}
		}
	}
	defer cont()
	// The first goes out alone, the others wait behind it and go out
	// together (a batch) once it is stored.
	for i := 1; i <= n; i++ {
		if err := tr.SendAsync(ctx, q, message.Message{"n": i}, transit.SendOptions{}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	waitFor(t, 30*time.Second, func() error {
		if got := transit.AsyncPublishedAgain(tr); got < 2 {
			return fmt.Errorf("the send was published again %d times, want 2 while the bus is stopped", got)
		}
		return nil
	})
	cont()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := tr.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	for next := int64(0); next <= n; next++ {
		select {
		case d := <-c.C():
			if got, _ := message.Int(d.Msg["n"]); got != next {
				t.Fatalf("got n=%d, want %d: a send published again was stored twice", got, next)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never came", next)
		}
	}
	waitFor(t, 20*time.Second, func() error {
		if st, err := tr.Stat(ctx, q); err != nil || st.Msgs != 0 {
			return fmt.Errorf("after handling all: got %+v, %v; want 0 waiting", st, err)
		}
		return nil
	})
}
