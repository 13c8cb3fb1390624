package transit_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// recvLocal takes the next message of l as a hosting goroutine does: Drain,
// and sleep on Ready when it found nothing. It fails the test after d.
func recvLocal(t testing.TB, l *transit.Local, d time.Duration) message.Message {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	var buf [1]message.Message
	for {
		n, ok := l.Drain(buf[:], nil)
		if !ok {
			t.Fatalf("local queue %s: unhosted while receiving", l.Name())
		}
		if n == 1 {
			return buf[0]
		}
		select {
		case <-l.Ready():
		case <-deadline.C:
			t.Fatalf("local queue %s: nothing received in %v", l.Name(), d)
		}
	}
}

func seqOf(t testing.TB, m message.Message) (sender, i int64) {
	t.Helper()
	s, ok1 := message.Int(m["s"])
	i, ok2 := message.Int(m["i"])
	if !ok1 || !ok2 {
		t.Fatalf("message without s and i: %v", m)
	}
	return s, i
}

// TestLocalReadyAndDrain: a receiver asleep on Ready is woken by a send;
// Drain returns messages oldest first across the ring's wrap-around and
// at most len(buf) at a time; after Unhost, Ready is closed and
// Drain reports the end.
func TestLocalReadyAndDrain(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("ready", 4)
	if err != nil {
		t.Fatal(err)
	}
	if l.Cap() != 4 {
		t.Errorf("Cap: got %d, want 4", l.Cap())
	}
	var buf [3]message.Message
	if n, ok := l.Drain(buf[:], nil); n != 0 || !ok {
		t.Fatalf("Drain of an empty queue: got %d, %v; want 0, true", n, ok)
	}
	got := make(chan message.Message)
	go func() {
		<-l.Ready()
		n, _ := l.Drain(buf[:1], nil)
		if n == 1 {
			got <- buf[0]
		}
		close(got)
	}()
	if err := tr.Send(ctx, "ready", message.Message{"i": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m["i"] != int64(1) {
			t.Errorf("woken receiver got %v, want i=1", m)
		}
	case <-ctx.Done():
		t.Fatal("a receiver sleeping on Ready was not woken by a send")
	}
	// Wrap around the ring: 3 in, 2 out, 3 in; then drain 3 + 2.
	next := 0
	send := func(k int) {
		for range k {
			if err := tr.Send(ctx, "ready", message.Message{"i": next}, transit.SendOptions{NonBlocking: true}); err != nil {
				t.Fatalf("send %d: %v", next, err)
			}
			next++
		}
	}
	want := 0
	drain := func(max, wantN int) {
		n, ok := l.Drain(buf[:max], nil)
		if n != wantN || !ok {
			t.Fatalf("Drain(%d): got %d, %v; want %d, true", max, n, ok, wantN)
		}
		for _, m := range buf[:n] {
			if i, _ := message.Int(m["i"]); i != int64(want) {
				t.Fatalf("drained i=%d, want %d", i, want)
			}
			want++
		}
	}
	send(3)
	drain(2, 2)
	send(3)
	if l.Len() != 4 {
		t.Errorf("Len: got %d, want 4", l.Len())
	}
	drain(3, 3)
	drain(3, 1)
	drain(3, 0)
	if rest, _ := tr.InProcess().Unhost("ready"); len(rest) != 0 {
		t.Errorf("Unhost of an empty queue: got %v", rest)
	}
	select {
	case _, open := <-l.Ready():
		if open {
			// A token from the last send may still be there; the next
			// receive must see the close.
			if _, open = <-l.Ready(); open {
				t.Error("Ready still open after Unhost")
			}
		}
	case <-ctx.Done():
		t.Fatal("Ready not closed after Unhost")
	}
	if n, ok := l.Drain(buf[:], nil); n != 0 || ok {
		t.Errorf("Drain after Unhost: got %d, %v; want 0, false", n, ok)
	}
}

// TestLocalConcurrentSendersFIFO: several senders fill a small queue
// (they wait for room most of the time) while one receiver drains it;
// every message arrives once, in order per sender.
func TestLocalConcurrentSendersFIFO(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	l, err := tr.InProcess().Host("fifo", 8)
	if err != nil {
		t.Fatal(err)
	}
	const senders, each = 4, 5000
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if err := tr.Send(ctx, "fifo", message.Message{"s": s, "i": i}, transit.SendOptions{}); err != nil {
					errs <- fmt.Errorf("sender %d, message %d: %w", s, i, err)
					return
				}
			}
		})
	}
	next := make([]int64, senders)
	var buf [5]message.Message
	for got := 0; got < senders*each; {
		n, ok := l.Drain(buf[:], nil)
		if !ok {
			t.Fatal("unhosted while receiving")
		}
		if n == 0 {
			select {
			case <-l.Ready():
			case err := <-errs:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("received %d of %d, then nothing", got, senders*each)
			}
			continue
		}
		for _, m := range buf[:n] {
			s, i := seqOf(t, m)
			if i != next[s] {
				t.Fatalf("sender %d: got message %d, want %d", s, i, next[s])
			}
			next[s]++
		}
		got += n
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, _ := l.Drain(buf[:], nil); n != 0 {
		t.Errorf("%d messages more than were sent", n)
	}
}

// TestLocalUnhostRace: senders keep sending while the receiver takes some
// messages and then the queue is unhosted. Every message is delivered
// exactly once — taken by the receiver, returned by Unhost, or sent
// to the bus (also those whose sender was waiting for room) — and per
// sender in order across the three, in that order.
func TestLocalUnhostRace(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	l, err := tr.InProcess().Host("race", 16)
	if err != nil {
		t.Fatal(err)
	}
	const senders, each, takeFirst = 3, 200, 150
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if err := tr.Send(ctx, "race", message.Message{"s": s, "i": i}, transit.SendOptions{}); err != nil {
					errs <- fmt.Errorf("sender %d, message %d: %w", s, i, err)
					return
				}
			}
		})
	}
	var seen []message.Message
	for len(seen) < takeFirst {
		seen = append(seen, recvLocal(t, l, 30*time.Second))
	}
	// Wait until the queue is full again, with senders waiting for room.
	for !l.SendersWaiting() {
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("queue never full again")
		case <-time.After(time.Millisecond):
		}
	}
	rest, _ := tr.InProcess().Unhost("race")
	if len(rest) != 16 {
		t.Errorf("Unhost: got %d messages, want the 16 waiting", len(rest))
	}
	seen = append(seen, rest...)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for len(seen) < senders*each {
		m, err := tr.TryReceive(ctx, "race")
		if errors.Is(err, transit.ErrEmpty) {
			t.Fatalf("bus empty after %d of %d messages", len(seen), senders*each)
		}
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, m)
	}
	if m, err := tr.TryReceive(ctx, "race"); !errors.Is(err, transit.ErrEmpty) {
		t.Errorf("an extra message on the bus: %v, %v", m, err)
	}
	next := make([]int64, senders)
	for _, m := range seen {
		s, i := seqOf(t, m)
		if i != next[s] {
			t.Fatalf("sender %d: got message %d, want %d (taken, then unhosted, then bus)", s, i, next[s])
		}
		next[s]++
	}
}

// TestLocalWaitingSenderGoesToBusOnUnhost: a sender waiting for room in a
// full queue is released by Unhost and its message goes to the bus.
func TestLocalWaitingSenderGoesToBusOnUnhost(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("wait", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(ctx, "wait", message.Message{"i": 0}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- tr.Send(ctx, "wait", message.Message{"i": 1}, transit.SendOptions{}) }()
	for !l.SendersWaiting() {
		select {
		case err := <-sent:
			t.Fatalf("Send to a full queue returned %v, want it to wait", err)
		case <-ctx.Done():
			t.Fatal("the sender never waited for room")
		case <-time.After(100 * time.Microsecond):
		}
	}
	rest, _ := tr.InProcess().Unhost("wait")
	if len(rest) != 1 || rest[0]["i"] != int64(0) {
		t.Errorf("Unhost: got %v, want [i=0]", rest)
	}
	if err := <-sent; err != nil {
		t.Fatalf("waiting sender: %v", err)
	}
	m, err := tr.TryReceive(ctx, "wait")
	if err != nil || m["i"] != int64(1) {
		t.Errorf("bus: got %v, %v; want i=1", m, err)
	}
	if l.Len() != 0 {
		t.Errorf("Len after unhost: %d", l.Len())
	}
}

// TestLocalBehindBus: a queue hosted with InProcess.HostBehindBus takes no send
// into memory until EndBehindBus succeeds, and after that no send reaches
// the bus: every message the owner finds on the bus when it ends the
// bus-first sending is older than everything in the Local.
func TestLocalBehindBus(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	l, err := tr.InProcess().HostBehindBus("behind", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	send := func(s, i int) {
		if err := tr.Send(ctx, "behind", message.Message{"s": s, "i": i}, transit.SendOptions{}); err != nil {
			t.Error(err)
		}
	}
	send(0, 0)
	if l.Len() != 0 {
		t.Fatalf("a send behind the bus went into the Local (%d waiting)", l.Len())
	}
	if tr.InProcess().EndBehindBus(l, func() bool { return false }) {
		t.Fatal("EndBehindBus succeeded although caught reported false")
	}
	send(0, 1)
	if l.Len() != 0 {
		t.Fatalf("a send after a failed EndBehindBus went into the Local (%d waiting)", l.Len())
	}

	// Senders keep sending while the bus-first sending ends.
	const senders, each = 4, 300
	var wg sync.WaitGroup
	started := make(chan struct{}, senders)
	for s := 1; s <= senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i == 10 {
					started <- struct{}{}
				}
				send(s, i)
			}
		}()
	}
	for range senders {
		<-started
	}
	var onBus int64
	for !tr.InProcess().EndBehindBus(l, func() bool {
		if err := tr.Flush(ctx); err != nil {
			t.Error(err)
			return false
		}
		st, err := tr.Stat(ctx, "behind")
		if err != nil {
			t.Error(err)
			return false
		}
		onBus = st.Msgs
		return true
	}) {
		if ctx.Err() != nil {
			t.Fatal("EndBehindBus never succeeded")
		}
	}
	wg.Wait()
	st, err := tr.Stat(ctx, "behind") // the Local's messages and the bus'
	if err != nil {
		t.Fatal(err)
	}
	bus := st.Msgs - int64(l.Len())
	if bus != onBus {
		t.Fatalf("%d messages reached the bus after EndBehindBus succeeded", bus-onBus)
	}
	if st.Msgs != 2+senders*each {
		t.Fatalf("%d messages in the Local and on the bus, want %d", st.Msgs, 2+senders*each)
	}
	// Per sender, what is in the Local follows what is on the bus.
	last := map[int64]int64{}
	for range bus {
		m, err := tr.TryReceive(ctx, "behind")
		if err != nil {
			t.Fatal(err)
		}
		s, i := seqOf(t, m)
		last[s] = i
	}
	for l.Len() > 0 {
		s, i := seqOf(t, recvLocal(t, l, time.Second))
		if prev, ok := last[s]; ok && i != prev+1 {
			t.Fatalf("sender %d: message %d in the Local after %d on the bus", s, i, prev)
		}
		last[s] = i
	}
}
