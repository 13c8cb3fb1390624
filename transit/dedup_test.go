package transit_test

import (
	"fmt"
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
	cont := pauseBus(t, dir)
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

// A send with a message ID of its own (HostSendOptions.MsgID, as a host
// gives the sends a bus delivery's handling makes into the cluster scope)
// is stored once however often it is sent within the duplicate window, and
// goes out alone: a batch with other messages would carry another ID, and
// sent again among other messages, it would not be dropped.
func TestSendWithMsgIDStoredOnce(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, time.Minute)
	const q = "ids.q"
	p := tr.InProcess()
	if err := tr.Send(ctx, q, message.Message{"name": "a"}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	// With the bus stopped, the first send goes out alone and the others
	// wait behind it: they would go out together, as one batch.
	cont := pauseBus(t, dir)
	sends := []struct {
		name, id string
	}{{"b", "origin.1"}, {"c", ""}, {"b again", "origin.1"}, {"d", ""}, {"e", "origin.2"}, {"f", ""}}
	for _, s := range sends {
		if _, err := p.Send(ctx, q, message.Message{"name": s.name}, nil, transit.HostSendOptions{MsgID: s.id}); err != nil {
			t.Fatalf("send %s: %v", s.name, err)
		}
	}
	cont()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := tr.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	var got []string
	seqs := map[string]uint64{}
	for range 6 {
		select {
		case d := <-c.C():
			name, _ := d.Msg["name"].(string)
			got = append(got, name)
			seqs[name] = d.Seq
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("got %v, then nothing", got)
		}
	}
	if fmt.Sprint(got) != "[a b c d e f]" {
		t.Fatalf("got %v, want [a b c d e f]: the send again with the same ID was stored", got)
	}
	for _, s := range []string{"b", "e"} {
		for _, o := range []string{"a", "c", "d", "f"} {
			if seqs[s] == seqs[o] {
				t.Fatalf("%s (with an ID of its own) went out in one bus message with %s", s, o)
			}
		}
	}
	waitFor(t, 20*time.Second, func() error {
		if st, err := tr.Stat(ctx, q); err != nil || st.Msgs != 0 {
			return fmt.Errorf("after handling all: got %+v, %v; want 0 waiting", st, err)
		}
		return nil
	})
}
