package transit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestValidateQueueName(t *testing.T) {
	tests := []struct {
		name    string
		qname   string
		wantErr string // substring; "" means valid
	}{
		{"simple", "Example1", ""},
		{"all allowed characters", "a-b_c.D9", ""},
		{"dots only", "...", ""},
		{"200 characters", strings.Repeat("x", 200), ""},
		{"empty", "", "empty"},
		{"201 characters", strings.Repeat("x", 201), "201 characters"},
		{"space", "a b", `character ' ' at byte 1`},
		{"slash", "a/b", `character '/' at byte 1`},
		{"star", "a*", `character '*'`},
		{"non-ASCII", "café", `character 'é'`},
		{"tilde", "a~b", `character '~'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := transit.ValidateQueueName(tt.qname)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("got nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("got %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestSendRejects(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	big := strings.Repeat("x", transit.MaxMessageBytes)
	tests := []struct {
		name    string
		qname   string
		msg     message.Message
		wantErr string
		wantIs  error
	}{
		{"bad queue name", "no spaces", message.Message{"a": 1}, `invalid queue name "no spaces"`, nil},
		{"nil message", "q", nil, "must be a map", message.ErrNotJSON},
		{"channel value", "q", message.Message{"c": make(chan int)}, `at "c"`, message.ErrNotJSON},
		{"NaN", "q", message.Message{"f": func() {}}, `at "f"`, message.ErrNotJSON},
		{"too large", "q", message.Message{"big": big}, "at most 8388608 allowed", transit.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tr.Send(ctx, tt.qname, tt.msg, transit.SendOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want errors.Is(err, %v)", err, tt.wantIs)
			}
		})
	}
	t.Run("8 MiB message goes through", func(t *testing.T) {
		m := message.Message{"big": big[:transit.MaxMessageBytes-200]}
		if err := tr.Send(ctx, "bigq", m, transit.SendOptions{}); err != nil {
			t.Fatalf("Send: got %v, want nil", err)
		}
		got, err := tr.TryReceive(ctx, "bigq")
		if err != nil {
			t.Fatalf("TryReceive: %v", err)
		}
		if s, _ := got["big"].(string); len(s) != transit.MaxMessageBytes-200 {
			t.Errorf("got a %d-byte string, want %d", len(s), transit.MaxMessageBytes-200)
		}
	})
}

func TestBusFIFOAndReceive(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const n = 2000
	for i := range n {
		send := tr.SendAsync
		if i%100 == 0 {
			send = tr.Send
		}
		if err := send(ctx, "fifo.q", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	st, err := tr.Stat(ctx, "fifo.q")
	if err != nil {
		t.Fatal(err)
	}
	// Msgs counts bus messages: a burst of SendAsync travels in batches.
	if st.Msgs < 1 || st.Msgs > n || st.Bytes <= 0 || st.Capacity.Msgs != transit.DefaultCapacity.Msgs {
		t.Errorf("Stat: got %+v, want 1..%d msgs, some bytes, capacity %d", st, n, transit.DefaultCapacity.Msgs)
	}
	// Single receives, then a consumer for the rest: one order.
	for i := range 10 {
		m, err := tr.Receive(ctx, "fifo.q")
		if err != nil {
			t.Fatalf("Receive %d: %v", i, err)
		}
		if got, _ := message.Int(m["i"]); got != int64(i) {
			t.Fatalf("Receive %d: got i=%d, want %d", i, got, i)
		}
		if _, ok := m.SendTS(); !ok {
			t.Errorf("Receive %d: no send_ts in %v", i, m)
		}
	}
	c, err := tr.Consume(ctx, "fifo.q")
	if err != nil {
		t.Fatal(err)
	}
	next := 10
	for d := range c.C() {
		if got, _ := message.Int(d.Msg["i"]); got != int64(next) {
			t.Fatalf("Consume: got i=%d, want %d", got, next)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		if next++; next == n {
			c.Stop()
		}
	}
	if next != n {
		t.Fatalf("consumer closed after %d messages, want %d", next, n)
	}
	if _, err := tr.TryReceive(ctx, "fifo.q"); !errors.Is(err, transit.ErrEmpty) {
		t.Errorf("TryReceive on an empty queue: got %v, want ErrEmpty", err)
	}
	waitFor(t, 10*time.Second, func() error {
		st, err := tr.Stat(ctx, "fifo.q")
		if err != nil || st.Msgs != 0 {
			return fmt.Errorf("Stat after draining: got %+v, %v; want 0 msgs", st, err)
		}
		return nil
	})
}

// A consumer that stops with deliveries it never acknowledged (as a dying
// owner does) hands the queue over in order: the next owner starts at
// the first unacknowledged message.
func TestConsumerTakeOverKeepsOrder(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const n = 500
	for i := range n {
		if err := tr.SendAsync(ctx, "takeover", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	next := 0
	for round, handle := range []int{7, 100, 1, 0, 392} {
		c, err := tr.Consume(ctx, "takeover")
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for d := range c.C() {
			if got == handle {
				c.Stop() // the rest of the fetched messages: never acknowledged
				continue
			}
			if i, _ := message.Int(d.Msg["i"]); i != int64(next) {
				t.Fatalf("round %d: got i=%d, want %d", round, i, next)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
			next++
			got++
			if next == n {
				c.Stop()
			}
		}
	}
	if next != n {
		t.Fatalf("handled %d messages, want %d", next, n)
	}
}

func TestLocalQueue(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("Loc", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.InProcess().Host("Loc", 2); err == nil || !strings.Contains(err.Error(), "already hosted") {
		t.Errorf("second Host: got %v, want an 'already hosted' error", err)
	}
	for i := range 2 {
		if err := tr.Send(ctx, "Loc", message.Message{"i": i}, transit.SendOptions{NonBlocking: true}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if got := l.Len(); got != 2 {
		t.Errorf("Len: got %d, want 2", got)
	}
	t.Run("full queue, nonblocking", func(t *testing.T) {
		err := tr.Send(ctx, "Loc", message.Message{"i": 99}, transit.SendOptions{NonBlocking: true})
		if !errors.Is(err, transit.ErrFull) {
			t.Errorf("got %v, want ErrFull", err)
		}
	})
	t.Run("full queue, blocking until the context ends", func(t *testing.T) {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		err := tr.Send(sctx, "Loc", message.Message{"i": 99}, transit.SendOptions{})
		if !errors.Is(err, transit.ErrFull) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want ErrFull and DeadlineExceeded", err)
		}
	})
	t.Run("full queue, blocking until room appears", func(t *testing.T) {
		sent := make(chan error, 1)
		go func() { sent <- tr.Send(ctx, "Loc", message.Message{"i": 2}, transit.SendOptions{}) }()
		m := recvLocal(t, l, 10*time.Second)
		if i, _ := message.Int(m["i"]); i != 0 {
			t.Errorf("received i=%d, want 0", i)
		}
		if err := <-sent; err != nil {
			t.Errorf("blocked Send: got %v, want nil", err)
		}
	})
	t.Run("force_non_local goes to the bus", func(t *testing.T) {
		m := message.Message{"i": "bus", message.MetaKey: map[string]any{"overrides": map[string]any{"force_non_local": map[string]any{"Loc": true}}}}
		if err := tr.Send(ctx, "Loc", m, transit.SendOptions{NonBlocking: true}); err != nil {
			t.Fatal(err)
		}
		got, err := tr.TryReceive(ctx, "Loc")
		if err != nil || got["i"] != "bus" {
			t.Errorf("TryReceive: got %v, %v; want the forced message", got, err)
		}
	})
	t.Run("BusOnly goes to the bus", func(t *testing.T) {
		if err := tr.InProcess().SendWait(ctx, "Loc", message.Message{"i": "busonly"}, transit.HostSendOptions{SendOptions: transit.SendOptions{NonBlocking: true}, BusOnly: true}); err != nil {
			t.Fatal(err)
		}
		if got := l.Len(); got != 2 {
			t.Errorf("local Len after a BusOnly send: got %d, want 2", got)
		}
		got, err := tr.TryReceive(ctx, "Loc")
		if err != nil || got["i"] != "busonly" {
			t.Errorf("TryReceive: got %v, %v; want the BusOnly message", got, err)
		}
	})
	st, err := tr.Stat(ctx, "Loc")
	if err != nil || !st.Local || st.Msgs != 2 || st.Capacity.Msgs != 2 {
		t.Errorf("Stat: got %+v, %v; want local, 2 msgs, capacity 2", st, err)
	}
	// Stats with Waiting and BusOnly names the bus queues holding messages, not what waits in
	// this process' mailboxes.
	if err := tr.Send(ctx, "Elsewhere", message.Message{"i": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	waiting, err := tr.Stats(ctx, transit.QueueFilter{Waiting: true, BusOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int64{}
	for _, q := range waiting {
		found[q.Name] = q.Msgs
	}
	if found["Elsewhere"] != 1 {
		t.Errorf("Stats(Waiting, BusOnly): got %v, want Elsewhere with 1 message", waiting)
	}
	if _, ok := found["Loc"]; ok {
		t.Errorf("Stats(Waiting, BusOnly): got %v, want no Loc (its messages wait in memory)", waiting)
	}
	// Stats with Waiting names every queue holding messages, in memory or on
	// the bus, and no empty one; Stats with no filter names the empty local queue too.
	if _, err := tr.InProcess().Host("Idle", 4); err != nil {
		t.Fatal(err)
	}
	defer tr.InProcess().Unhost("Idle")
	names := func(stats []transit.QueueStat, err error) map[string]int64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, q := range stats {
			out[q.Name] = q.Msgs
		}
		return out
	}
	if got := names(tr.Stats(ctx, transit.QueueFilter{Waiting: true})); got["Loc"] != 2 || got["Elsewhere"] != 1 || len(got) != 2 {
		t.Errorf("Stats(Waiting): got %v, want Loc with 2 and Elsewhere with 1 message", got)
	}
	if got, ok := names(tr.Stats(ctx, transit.QueueFilter{}))["Idle"]; !ok || got != 0 {
		t.Errorf("Stats: got Idle %d (listed %v), want it listed empty", got, ok)
	}
	// Stats with BusOnly lists the bus' queues (Loc has a consumer there,
	// since TryReceive took from it) and not the queue only hosted here.
	busOnly := names(tr.Stats(ctx, transit.QueueFilter{BusOnly: true}))
	if got, ok := busOnly["Loc"]; !ok || got != 0 {
		t.Errorf("Stats(BusOnly): got Loc %d (listed %v), want it listed with nothing on the bus", got, ok)
	}
	if _, ok := busOnly["Idle"]; ok {
		t.Errorf("Stats(BusOnly): got %v, want no Idle (it is only hosted here)", busOnly)
	}
	if _, err := tr.TryReceive(ctx, "Elsewhere"); err != nil {
		t.Fatal(err)
	}
	rest, _ := tr.InProcess().Unhost("Loc")
	var got []int64
	for _, m := range rest {
		i, _ := message.Int(m["i"])
		got = append(got, i)
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Errorf("Unhost: got %v, want [1 2]", got)
	}
	if _, ok := <-l.Ready(); ok {
		if _, ok := <-l.Ready(); ok {
			t.Error("Ready still open after Unhost")
		}
	}
	if n, ok := l.Drain(make([]message.Message, 1), nil); n != 0 || ok {
		t.Errorf("Drain after Unhost: got %d, %v; want 0, false", n, ok)
	}
	if err := tr.Send(ctx, "Loc", message.Message{"i": 3}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if m, err := tr.TryReceive(ctx, "Loc"); err != nil || m["i"] != int64(3) {
		t.Errorf("after Unhost the bus has: got %v, %v; want i=3", m, err)
	}
}

func TestDestinationScopes(t *testing.T) {
	dir := busDir(t)
	a := open(t, dir, transit.Options{Host: "boxa"})
	b := open(t, dir, transit.Options{Host: "boxb"})
	ctx := ctxT(t, 30*time.Second)
	if err := a.Send(ctx, "Q", message.Message{"to": "b"}, transit.SendOptions{Destination: "boxb"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(ctx, "Q", message.Message{"to": "a"}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tr   *transit.Transit
		want string
	}{{"other scope", b, "b"}, {"own scope", a, "a"}} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.tr.TryReceive(ctx, "Q")
			if err != nil || m["to"] != tc.want {
				t.Fatalf("got %v, %v; want to=%s", m, err, tc.want)
			}
			if m, err := tc.tr.TryReceive(ctx, "Q"); !errors.Is(err, transit.ErrEmpty) {
				t.Errorf("second TryReceive: got %v, %v; want ErrEmpty", m, err)
			}
		})
	}
}

func TestBusCapacity(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{Capacity: transit.Capacity{Msgs: 3}})
	ctx := ctxT(t, 30*time.Second)
	for i := range 3 {
		if err := tr.Send(ctx, "cap", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Send(ctx, "cap", message.Message{"i": 3}, transit.SendOptions{NonBlocking: true}); !errors.Is(err, transit.ErrFull) {
		t.Errorf("nonblocking send to a full bus queue: got %v, want ErrFull", err)
	}
	sent := make(chan error, 1)
	go func() { sent <- tr.Send(ctx, "cap", message.Message{"i": 3}, transit.SendOptions{}) }()
	if m, err := tr.Receive(ctx, "cap"); err != nil || m["i"] != int64(0) {
		t.Fatalf("Receive: got %v, %v", m, err)
	}
	if err := <-sent; err != nil {
		t.Errorf("blocking send after room appeared: got %v, want nil", err)
	}
	st, err := tr.Stat(ctx, "cap")
	if err != nil || st.Msgs != 3 || st.Capacity.Msgs != 3 {
		t.Errorf("Stat: got %+v, %v; want 3 of 3", st, err)
	}
}

func TestTokenRequired(t *testing.T) {
	dir := busDir(t)
	open(t, dir, transit.Options{})
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, transit.BusTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		opts   []nats.Option
		wantOK bool
	}{
		{"no token", nil, false},
		{"wrong token", []nats.Option{nats.Token("wrong")}, false},
		{"the token", []nats.Option{nats.Token(strings.TrimSpace(string(tok)))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(bi.URL, append(tc.opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Errorf("connect: got %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
	for _, f := range []string{dir, filepath.Join(dir, transit.BusTokenFile)} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: got mode %v, want no group/other access", f, perm)
		}
	}
}

func TestConcurrentFirstUseStartsOneBus(t *testing.T) {
	dir := busDir(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tr, err := transit.Open(ctx, transit.Options{TransportDir: dir, Host: "testhost"})
			if err != nil {
				errs <- err
				return
			}
			errs <- tr.Close()
		})
	}
	// And a CLI process that may start the bus (send) at the same time.
	c := startChild(t, "main", []string{"send", "-T", dir, "--host", "testhost", "first", `{"a":1}`})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	if err := c.wait(t, 30*time.Second); err != nil {
		t.Errorf("queues process: %v", err)
	}
	log, err := os.ReadFile(filepath.Join(dir, transit.BusLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(log), "bus ready"); got != 1 {
		t.Errorf("bus.log has %d 'bus ready' lines, want 1:\n%s", got, log)
	}
}

// Messages of non-canonical Go types are converted before delivery.
func TestSendNormalizesLocalMessages(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("norm", 10)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   message.Message
		key  string
		want any
	}{
		{"int becomes int64", message.Message{"v": 7}, "v", int64(7)},
		{"nested uint32", message.Message{"v": map[string]any{"w": uint32(3)}}, "v", map[string]any{"w": int64(3)}},
		{"canonical kept", message.Message{"v": "s"}, "v", "s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tr.Send(ctx, "norm", tt.in, transit.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			got := recvLocal(t, l, 10*time.Second)[tt.key]
			if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestSendCanonicalSkipsTheCheck: with SendOptions.Canonical the sender's
// promise stands in for the check — the very map is delivered, stamped,
// and a nil message is still refused.
func TestSendCanonicalSkipsTheCheck(t *testing.T) {
	tr := open(t, busDir(t), transit.Options{})
	ctx := ctxT(t, 30*time.Second)
	l, err := tr.InProcess().Host("canon", 10)
	if err != nil {
		t.Fatal(err)
	}
	in := message.Message{"v": int64(7), "l": []any{"a", 1.5}}
	if err := tr.InProcess().SendWait(ctx, "canon", in, transit.HostSendOptions{Canonical: true}); err != nil {
		t.Fatal(err)
	}
	got := recvLocal(t, l, 10*time.Second)
	if reflect.ValueOf(map[string]any(got)).UnsafePointer() != reflect.ValueOf(map[string]any(in)).UnsafePointer() {
		t.Errorf("got a different map, want the one sent")
	}
	if _, ok := got.SendTS(); !ok {
		t.Errorf("no send_ts in %v", got)
	}
	// The promise is the sender's: a broken one is not repaired.
	if err := tr.InProcess().SendWait(ctx, "canon", message.Message{"v": 7}, transit.HostSendOptions{Canonical: true}); err != nil {
		t.Fatal(err)
	}
	if v := recvLocal(t, l, 10*time.Second)["v"]; v != 7 {
		t.Errorf("got %#v, want the int as sent", v)
	}
	if err := tr.InProcess().SendWait(ctx, "canon", nil, transit.HostSendOptions{Canonical: true}); err == nil {
		t.Errorf("nil message: got no error, want one")
	}
}
