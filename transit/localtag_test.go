package transit_test

import (
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestLocalTagsTravelWithMessages: the tag of an InProcess.Send goes with
// its message through a local queue — also when the send put a
// normalised copy in the queue (a Go int), across the ring's wrap-around
// and an Overflow growth — and comes out beside it from Drain and
// InProcess.Unhost; a message sent without a tag comes out with nil;
// a send that goes to the bus reports local false.
func TestLocalTagsTravelWithMessages(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("tagged", 2)
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int, tag any, opts transit.HostSendOptions) {
		t.Helper()
		local, err := tr.InProcess().Send(ctx, "tagged", message.Message{"i": i}, tag, opts)
		if err != nil || !local {
			t.Fatalf("send %d: local %v, err %v", i, local, err)
		}
	}
	tagOf := func(i int) any {
		if i%3 == 2 {
			return nil
		}
		return &i
	}
	check := func(m message.Message, tag any, want int) {
		t.Helper()
		if got, _ := message.Int(m["i"]); got != int64(want) {
			t.Fatalf("got message %v, want i %d", m, want)
		}
		switch wt := tagOf(want).(type) {
		case nil:
			if tag != nil {
				t.Fatalf("message %d: tag %v, want none", want, tag)
			}
		case *int:
			if p, ok := tag.(*int); !ok || *p != *wt {
				t.Fatalf("message %d: tag %v, want &%d", want, tag, *wt)
			}
		}
	}
	msgs := make([]message.Message, 2)
	tags := make([]any, 2)
	next := 0
	for i := range 7 { // wraps around the ring of 2
		send(i, tagOf(i), transit.HostSendOptions{})
		n, ok := l.Drain(msgs[:1], tags)
		if n != 1 || !ok {
			t.Fatalf("drain: n %d ok %v", n, ok)
		}
		check(msgs[0], tags[0], next)
		next++
	}
	// Beyond capacity (the ring grows), then unhosted with the rest.
	for i := 7; i < 12; i++ {
		send(i, tagOf(i), transit.HostSendOptions{Overflow: true})
	}
	n, _ := l.Drain(msgs, tags)
	for j := range n {
		check(msgs[j], tags[j], next)
		next++
	}
	rest, restTags := tr.InProcess().Unhost("tagged")
	if len(rest) != 12-next || len(restTags) != len(rest) {
		t.Fatalf("unhost: %d messages and %d tags, want %d", len(rest), len(restTags), 12-next)
	}
	for j, m := range rest {
		check(m, restTags[j], next)
		next++
	}
	local, err := tr.InProcess().Send(ctx, "tagged", message.Message{"i": 99}, tagOf(0), transit.HostSendOptions{})
	if err != nil || local {
		t.Fatalf("send to the unhosted queue: local %v, err %v; want the bus", local, err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
