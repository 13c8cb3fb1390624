package transit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// pauseBus stops the bus process of dir (SIGSTOP): what is published
// meanwhile stays in flight. The returned function resumes it; so does
// the test's end.
func pauseBus(t *testing.T, dir string) (resume func()) {
	t.Helper()
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopProcess(t, bi.PID)
	var once sync.Once
	resume = func() { once.Do(func() { syscall.Kill(bi.PID, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// sendPiled sends msgs to queue q of tr (bus in dir) so that msgs[0] and
// msgs[1] travel alone and msgs[2:] together, in one bus message: msgs[0]
// with Send (which also creates the queue), then, with the bus paused,
// msgs[1] leaves with SendAsync and stays in flight while the rest piles
// up behind it.
func sendPiled(t *testing.T, dir string, tr *transit.Transit, q string, msgs []message.Message) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	if err := tr.Send(ctx, q, msgs[0], transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	resume := pauseBus(t, dir)
	for _, m := range msgs[1:] {
		if err := tr.SendAsync(ctx, q, m, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	resume()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// rawStream returns the stream of host scope "testhost" on the bus in
// dir, through a connection of its own.
func rawStream(t *testing.T, dir string) jetstream.Stream {
	t.Helper()
	s, err := rawJS(t, dir).Stream(ctxT(t, 10*time.Second), "MM_testhost")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func numbered(n int, name string) []message.Message {
	out := make([]message.Message, n)
	for i := range out {
		out[i] = message.Message{name: int64(i)}
	}
	return out
}

// Several queued messages travel in one bus message, with a header that
// marks the batch and length-prefixed members; a lone message stays a
// plain JSON payload; the owner gets every member, in order, with its
// meta.
func TestBatchRoundTrip(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const n = 100
	msgs := numbered(n, "i")
	msgs[50][message.MetaKey] = map[string]any{
		"overrides": map[string]any{"force_non_local": map[string]any{"batched": true}},
		"mine":      "kept",
	}
	sendPiled(t, dir, tr, "batched", msgs)

	st, err := tr.Stat(ctx, "batched")
	if err != nil || st.Msgs != 3 {
		t.Fatalf("Stat: got %+v, %v; want 3 bus messages (two lone, one batch)", st, err)
	}
	s := rawStream(t, dir)
	for seq, want := range map[uint64]int{1: 0, 2: 1} {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if h := raw.Header.Get(transit.BatchHeader); h != "" {
			t.Errorf("lone message %d: got header %s: %s, want none", seq, transit.BatchHeader, h)
		}
		m, err := message.Unmarshal(raw.Data)
		if i, _ := message.Int(m["i"]); err != nil || i != int64(want) {
			t.Errorf("lone message %d: got payload %s (%v), want the JSON of message %d", seq, raw.Data, err, want)
		}
	}
	raw, err := s.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get(transit.BatchHeader); got != strconv.Itoa(n-2) {
		t.Errorf("batch: got header %s: %q, want %d", transit.BatchHeader, got, n-2)
	}
	first, _, _ := strings.Cut(strings.SplitN(string(raw.Data), "\n", 3)[1], "\n")
	if m, err := message.Unmarshal([]byte(first)); err != nil || m["i"] != int64(2) {
		t.Errorf("batch: second line %q (%v), want the JSON of message 2", first, err)
	}

	c, err := tr.Consume(ctx, "batched")
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	var batchSeq uint64
	for d := range c.C() {
		if i, _ := message.Int(d.Msg["i"]); i != int64(next) {
			t.Fatalf("got i=%d, want %d", i, next)
		}
		if _, ok := d.Msg.SendTS(); !ok {
			t.Errorf("message %d: no send_ts", next)
		}
		switch {
		case next == 2:
			batchSeq = d.Seq
		case next > 2 && d.Seq != batchSeq:
			t.Errorf("message %d: Seq %d, want %d (the batch's)", next, d.Seq, batchSeq)
		}
		if next == 50 {
			meta := d.Msg.Meta()
			if meta["mine"] != "kept" || d.Msg.LocalityFor("batched") != message.LocalityNonLocal {
				t.Errorf("message 50: meta %v, want its overrides and own key", meta)
			}
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		if next++; next == n {
			c.Stop()
		}
	}
	if next != n {
		t.Fatalf("got %d messages, want %d", next, n)
	}
	waitFor(t, 10*time.Second, func() error {
		if st, err := tr.Stat(ctx, "batched"); err != nil || st.Msgs != 0 {
			return fmt.Errorf("Stat after acknowledging all: %+v, %v; want empty", st, err)
		}
		return nil
	})
}

// Senders on several goroutines, in bursts, to one queue: each sender's
// messages arrive complete and in its order.
func TestBatchFIFOConcurrentBursts(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const senders, each = 4, 2500
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				if err := tr.SendAsync(ctx, "bursts", message.Message{"g": int64(g), "i": int64(i)}, transit.SendOptions{}); err != nil {
					errs <- err
					return
				}
				if i%500 == 499 {
					if err := tr.Flush(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := tr.Stat(ctx, "bursts")
	t.Logf("%d queue messages in %d bus messages", senders*each, st.Msgs)
	c, err := tr.Consume(ctx, "bursts")
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int64, senders)
	total := 0
	for d := range c.C() {
		g, _ := message.Int(d.Msg["g"])
		i, _ := message.Int(d.Msg["i"])
		if i != next[g] {
			t.Fatalf("sender %d: got i=%d, want %d", g, i, next[g])
		}
		next[g]++
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		if total++; total == senders*each {
			c.Stop()
		}
	}
	if total != senders*each {
		t.Fatalf("got %d messages, want %d", total, senders*each)
	}
}

// A consumer process killed with SIGKILL in the middle of a batch: the
// next consumer gets the batch again from its start (at least once) and
// nothing is lost.
func TestBatchConsumerKilledMidBatch(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	release := filepath.Join(t.TempDir(), "release")
	msgs := numbered(40, "n")
	msgs[20]["block_unless"] = release
	sendPiled(t, dir, tr, "work", msgs)

	first := startChild(t, "consumer", nil, consumerEnv(dir, "work", 1000, 5)...)
	for want := int64(0); want <= 20; want++ {
		if h := parseHandled(t, first.line(t, 30*time.Second)); h.N != want {
			t.Fatalf("first consumer: got n=%d, want %d", h.N, want)
		}
	}
	// It blocks inside message 20, in the middle of the batch 2..39.
	killBlocked(t, first, release)
	second := startChild(t, "consumer", nil, consumerEnv(dir, "work", 1000, 5)...)
	h := parseHandled(t, second.line(t, 30*time.Second))
	if h.N > 2 {
		t.Fatalf("second consumer: started at n=%d, want the batch again from its start (n <= 2)", h.N)
	}
	for want := h.N + 1; want < 40; want++ {
		if h := parseHandled(t, second.line(t, 30*time.Second)); h.N != want {
			t.Fatalf("second consumer: got n=%d, want %d", h.N, want)
		}
	}
	ctx := ctxT(t, 30*time.Second)
	waitFor(t, 10*time.Second, func() error {
		if st, err := tr.Stat(ctx, "work"); err != nil || st.Msgs != 0 {
			return fmt.Errorf("Stat: got %+v, %v; want an empty queue", st, err)
		}
		return nil
	})
}

// A batch member that kills every consumer that takes it: after
// MaxDeliver deaths the rest of its bus message goes to the dead-letter
// queue, each member with the reason, and the queue moves on.
func TestBatchMemberDeadLettered(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 90*time.Second)
	const maxDeliver = 3
	msgs := numbered(8, "n")
	msgs[5]["poison"] = true
	msgs[5]["payload"] = "keep me"
	sendPiled(t, dir, tr, "fragile", msgs) // bus messages [0] [1] [2..7]
	if err := tr.Send(ctx, "fragile", message.Message{"n": 8}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	deaths := 0
	for survived := false; !survived; {
		c := startChild(t, "consumer", nil, consumerEnv(dir, "fragile", 1000, maxDeliver)...)
		for l := range c.lines {
			if parseHandled(t, l).N == 8 {
				survived = true
				c.cmd.Process.Kill()
			}
		}
		if err := c.wait(t, 30*time.Second); err != nil && !survived {
			if deaths++; deaths > maxDeliver+2 {
				t.Fatalf("consumer died %d times; the poisoned batch was not dead-lettered", deaths)
			}
		}
	}
	if deaths < maxDeliver {
		t.Errorf("consumer died %d times, want at least MaxDeliver=%d", deaths, maxDeliver)
	}
	for want := int64(2); want < 8; want++ {
		dl, err := tr.TryReceive(ctx, transit.DeadLetterQueue)
		if err != nil {
			t.Fatalf("dead-letter queue, message n=%d: %v", want, err)
		}
		info, _ := dl.Meta()["dead_letter"].(map[string]any)
		reason, _ := info["reason"].(string)
		member, _ := message.Int(info["member"])
		members, _ := message.Int(info["members"])
		n, _ := message.Int(dl["n"])
		if n != want || info["queue"] != "fragile" || !strings.Contains(reason, "stopped") || member != want-1 || members != 6 {
			t.Errorf("dead letter: got n=%d with %v, want n=%d, queue fragile, a reason, member %d of 6", n, info, want, want-1)
		}
		if want == 5 && dl["payload"] != "keep me" {
			t.Errorf("the poisoned message: got %v, want its payload", dl)
		}
	}
	if m, err := tr.TryReceive(ctx, transit.DeadLetterQueue); !errors.Is(err, transit.ErrEmpty) {
		t.Errorf("dead-letter queue: got %v, %v after the batch, want empty", m, err)
	}
}

// Receives that take part of a batch: the rest stays for the next
// receive, in this Transit or, after Close, in the next one (or a `recv`
// process); nothing is lost or repeated.
func TestReceivePartOfBatch(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const n = 20
	sendPiled(t, dir, tr, "parts", numbered(n, "i")) // [0] [1] [2..19]
	next := int64(0)
	take := func(tr *transit.Transit, count int) {
		t.Helper()
		for range count {
			m, err := tr.TryReceive(ctx, "parts")
			if err != nil {
				t.Fatalf("TryReceive, want i=%d: %v", next, err)
			}
			if i, _ := message.Int(m["i"]); i != next {
				t.Fatalf("got i=%d, want %d", i, next)
			}
			next++
		}
	}
	take(tr, 5) // 0 1 | 2 3 4 of the batch
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr2 := open(t, dir, transit.Options{})
	take(tr2, 3) // 5 6 7
	if err := tr2.Close(); err != nil {
		t.Fatal(err)
	}
	recv := startChild(t, "main", []string{"recv", "-T", dir, "--host", "testhost", "--nonblock", "--count", "2", "parts"})
	for range 2 {
		m, err := message.Unmarshal([]byte(recv.line(t, 30*time.Second)))
		if i, _ := message.Int(m["i"]); err != nil || i != next {
			t.Fatalf("recv process: got %v (%v), want i=%d", m, err, next)
		}
		next++
	}
	if err := recv.wait(t, 30*time.Second); err != nil {
		t.Fatalf("recv process: %v", err)
	}
	tr3 := open(t, dir, transit.Options{})
	take(tr3, n-int(next))
	if m, err := tr3.TryReceive(ctx, "parts"); !errors.Is(err, transit.ErrEmpty) {
		t.Errorf("after all: got %v, %v; want ErrEmpty", m, err)
	}
	waitFor(t, 10*time.Second, func() error {
		if st, err := tr3.Stat(ctx, "parts"); err != nil || st.Msgs != 0 {
			return fmt.Errorf("Stat: got %+v, %v; want an empty queue", st, err)
		}
		return nil
	})
}

// A SendAsync burst to many queues, larger than the bound on messages in
// flight: SendAsync waits for room instead of failing, and while the bus
// does not answer, a SendAsync past the bound ends with its context.
func TestSendAsyncBounded(t *testing.T) {
	const bound = 64
	restore := transit.SetAsyncBound(bound)
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	restore()
	ctx := ctxT(t, 90*time.Second)
	const queues, each = 70, 10
	for q := range queues {
		if err := tr.Send(ctx, "many"+strconv.Itoa(q), message.Message{"i": 0}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < each; i++ {
		for q := range queues {
			if err := tr.SendAsync(ctx, "many"+strconv.Itoa(q), message.Message{"i": i}, transit.SendOptions{}); err != nil {
				t.Fatalf("SendAsync: %v", err)
			}
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	resume := pauseBus(t, dir)
	for i := range bound {
		if err := tr.SendAsync(ctx, "many"+strconv.Itoa(i%queues), message.Message{"i": each + i/queues}, transit.SendOptions{}); err != nil {
			t.Fatalf("SendAsync within the bound: %v", err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err := tr.SendAsync(sctx, "many0", message.Message{"i": -1}, transit.SendOptions{})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("SendAsync past the bound with the bus paused: got %v, want DeadlineExceeded", err)
	}
	resume()
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for q := range queues {
		want := each
		if q < bound {
			want++
		}
		for i := range want {
			m, err := tr.TryReceive(ctx, "many"+strconv.Itoa(q))
			if err != nil {
				t.Fatalf("queue many%d, message %d: %v", q, i, err)
			}
			if got, _ := message.Int(m["i"]); got != int64(i) {
				t.Fatalf("queue many%d: got i=%d, want %d", q, got, i)
			}
		}
		if m, err := tr.TryReceive(ctx, "many"+strconv.Itoa(q)); !errors.Is(err, transit.ErrEmpty) {
			t.Fatalf("queue many%d: got %v, %v after all, want ErrEmpty", q, m, err)
		}
	}
}

// sendingHandler is a log handler that sends each record to a queue
// through the Transit it logs for, as the out-of-band channels do.
type sendingHandler struct {
	tr    *transit.Transit
	queue string
	sent  chan string
}

func (h *sendingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *sendingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *sendingHandler) WithGroup(string) slog.Handler            { return h }
func (h *sendingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		return nil
	}
	err := h.tr.SendAsync(ctx, h.queue, message.Message{"text": r.Message}, transit.SendOptions{})
	h.sent <- r.Message
	return err
}

// A failed asynchronous send is logged, and the log handler may send
// through the same Transit without deadlocking it. (A send to a full
// queue fails for good when the dead-letter queue is full too.)
func TestFailedSendLoggedThroughTransit(t *testing.T) {
	dir := busDir(t)
	h := &sendingHandler{queue: "logs", sent: make(chan string, 100)}
	tr := open(t, dir, transit.Options{Capacity: transit.Capacity{Msgs: 1}, FullWait: 100 * time.Millisecond, Logger: slog.New(h)})
	h.tr = tr
	ctx := ctxT(t, 10*time.Second)
	for _, q := range []string{"full", transit.DeadLetterQueue} {
		if err := tr.Send(ctx, q, message.Message{"i": 0}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.SendAsync(ctx, "full", message.Message{"i": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flush(ctx); !errors.Is(err, transit.ErrFull) {
		t.Errorf("Flush: got %v, want ErrFull", err)
	}
	select {
	case text := <-h.sent:
		if !strings.Contains(text, "send failed") {
			t.Errorf("logged %q, want the failed send", text)
		}
	case <-ctx.Done():
		t.Fatal("the failed send was not logged")
	}
	if err := tr.Flush(ctx); err != nil {
		t.Errorf("Flush of the log's own send: %v", err)
	}
	if m, err := tr.TryReceive(ctx, "logs"); err != nil || !strings.Contains(fmt.Sprint(m["text"]), "send failed") {
		t.Errorf("logs queue: got %v, %v; want the log record", m, err)
	}
}

// The bus killed while asynchronous sends wait for its acknowledgement
// (written to the socket, never read): the Transit sends them again once
// a new bus runs, so Flush succeeds and every message arrives (at least
// once), in order.
func TestSendAsyncSurvivesBusKill(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 90*time.Second)
	const n = 300
	if err := tr.Send(ctx, "survivor", message.Message{"i": 0}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	pauseBus(t, dir)
	for i := 1; i < n/2; i++ {
		if err := tr.SendAsync(ctx, "survivor", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stopBus(t, dir, syscall.SIGKILL) // stopped: it never read them
	for i := n / 2; i < n; i++ {
		if err := tr.SendAsync(ctx, "survivor", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("Flush after the bus was killed: got %v, want the sends repeated until stored", err)
	}
	c, err := tr.Consume(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	next := int64(0)
	for d := range c.C() {
		i, _ := message.Int(d.Msg["i"])
		switch {
		case i == next:
			next++
		case i > next:
			t.Fatalf("got i=%d, want %d (lost)", i, next)
		}
		// i < next: a repeat of a message stored before the kill.
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		if next == n {
			c.Stop()
		}
	}
	if next != n {
		t.Fatalf("got messages up to %d, want %d", next, n)
	}
}
