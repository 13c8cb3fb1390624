package transit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// rawJS is a JetStream client of the bus in dir that holds the token, as
// an attacker running as the owner would: it publishes whatever bytes
// and headers it likes.
func rawJS(t *testing.T, dir string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(busConn(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// busConn is a connection of its own to the bus in dir, with the token,
// closed when the test ends.
func busConn(t *testing.T, dir string) *nats.Conn {
	t.Helper()
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, transit.BusTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(bi.URL, nats.Token(strings.TrimSpace(string(tok))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func publishRaw(ctx context.Context, t *testing.T, js jetstream.JetStream, subj string, data []byte, batch string) {
	t.Helper()
	m := nats.NewMsg(subj)
	m.Data = data
	if batch != "" {
		m.Header.Set(transit.BatchHeader, batch)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish %d bytes to %s: %v", len(data), subj, err)
	}
}

// deadLetters takes every dead letter waiting in tr's scope.
func deadLetters(ctx context.Context, t *testing.T, tr *transit.Transit) []message.Message {
	t.Helper()
	var out []message.Message
	for {
		m, err := tr.TryReceive(ctx, transit.DeadLetterQueue)
		if errors.Is(err, transit.ErrEmpty) {
			return out
		}
		if err != nil {
			t.Fatalf("dead-letter queue: %v", err)
		}
		out = append(out, m)
	}
}

// rawOf decodes a dead letter's raw bytes, failing unless raw_encoding
// says how.
func rawOf(t *testing.T, m message.Message) []byte {
	t.Helper()
	raw, _ := m["raw"].(string)
	switch m["raw_encoding"] {
	case "utf-8":
		return []byte(raw)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			t.Fatalf("dead letter raw: %v", err)
		}
		return b
	}
	t.Fatalf("dead letter without raw_encoding: %v", m)
	return nil
}

func reasonOf(m message.Message) string {
	info, _ := m.Meta()["dead_letter"].(map[string]any)
	r, _ := info["reason"].(string)
	return r
}

// consumeNs consumes queue q of tr until it got messages n=1..want in
// order, acknowledging each.
func consumeNs(ctx context.Context, t *testing.T, tr *transit.Transit, q string, want int) {
	t.Helper()
	cons, err := tr.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cons.Stop()
		for d := range cons.C() {
			d.Ack()
		}
	}()
	for i := int64(1); i <= int64(want); i++ {
		select {
		case d := <-cons.C():
			if n, _ := message.Int(d.Msg["n"]); n != i {
				t.Fatalf("queue %s: got %v, want n=%d", q, d.Msg, i)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("queue %s: no message n=%d", q, i)
		}
	}
}

// TestForgedBatchIsOneDeadLetter: a bus message with a BatchHeader that
// does not describe it (the attack: 1 MiB of "1\nx\n" announcing 262,144
// members), that announces more members than a sender ever puts in one,
// or whose members are not all messages, becomes exactly one dead letter
// holding its exact bytes; the queue goes on in order.
func TestForgedBatchIsOneDeadLetter(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 120*time.Second)
	member := func(s string) string { return strconv.Itoa(len(s)) + "\n" + s + "\n" }
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(member(`{"i":` + strconv.Itoa(i) + `}`))
		}
		return b.String()
	}
	cases := []struct {
		name, header, data, reason string
	}{
		{"flood", "262144", strings.Repeat("1\nx\n", 262144), "262144"},
		{"over the sender's maximum", "513", many(513), "513"},
		{"one member not a message", "3", member(`{"a":1}`) + member("x") + member(`{"b":2}`), "member 2 of 3"},
		{"bad count", "two", member(`{"a":1}`) + member(`{"b":2}`), "two"},
		{"framing", "2", "5\n{}\n", "Mm-Batch"},
	}
	js := rawJS(t, dir)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := "Router"
			if err := tr.Send(ctx, q, message.Message{"n": 1}, transit.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			publishRaw(ctx, t, js, "mm.testhost.q."+q, []byte(tc.data), tc.header)
			if err := tr.Send(ctx, q, message.Message{"n": 2}, transit.SendOptions{}); err != nil {
				t.Fatal(err)
			}
			consumeNs(ctx, t, tr, q, 2)
			dls := deadLetters(ctx, t, tr)
			if len(dls) != 1 {
				t.Fatalf("got %d dead letters, want 1", len(dls))
			}
			if got := rawOf(t, dls[0]); !bytes.Equal(got, []byte(tc.data)) {
				t.Errorf("dead letter raw: %d bytes, not the %d published", len(got), len(tc.data))
			}
			if r := reasonOf(dls[0]); !strings.Contains(r, "not a valid batch") || !strings.Contains(r, tc.reason) {
				t.Errorf("dead letter reason %q: want it to say the batch is not valid and mention %q", r, tc.reason)
			}
		})
	}
}

// TestDeadLetterRawExact: bytes that are not a message reach the
// dead-letter queue exactly (binary ones in base64, said by
// raw_encoding), and so does JSON whose strings are not UTF-8 or hold an
// escaped unpaired surrogate: decoding would have replaced them with
// U+FFFD, so it is refused, with the reason.
func TestDeadLetterRawExact(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	if err := tr.Send(ctx, "bin", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	js := rawJS(t, dir)
	bad := []struct {
		data, encoding, reason string
	}{
		{"\xff\xfe\x00binary\x80", "base64", "not a JSON object"},
		{"{\"s\": \"caf\xe9\"}", "base64", "invalid UTF-8 at byte 10"},
		{`{"s": "\ud800x"}`, "utf-8", "unpaired surrogate"},
		{"{\"deep\": " + strings.Repeat("[", 250) + "\"\xc3\"" + strings.Repeat("]", 250) + "}", "base64", "invalid UTF-8"},
		{"plain text", "utf-8", "not a JSON object"},
	}
	for _, b := range bad {
		publishRaw(ctx, t, js, "mm.testhost.q.bin", []byte(b.data), "")
	}
	if err := tr.Send(ctx, "bin", message.Message{"n": 2}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	consumeNs(ctx, t, tr, "bin", 2)
	dls := deadLetters(ctx, t, tr)
	if len(dls) != len(bad) {
		t.Fatalf("got %d dead letters, want %d", len(dls), len(bad))
	}
	for i, b := range bad {
		if got := rawOf(t, dls[i]); string(got) != b.data {
			t.Errorf("dead letter %d: raw %q, want %q", i, got, b.data)
		}
		if dls[i]["raw_encoding"] != b.encoding {
			t.Errorf("dead letter %d: raw_encoding %v, want %s", i, dls[i]["raw_encoding"], b.encoding)
		}
		if r := reasonOf(dls[i]); !strings.Contains(r, b.reason) {
			t.Errorf("dead letter %d: reason %q, want it to mention %q", i, r, b.reason)
		}
	}
}

// recordingHandler keeps the records logged through it.
type recordingHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}

// alerts returns the messages of the records with channel=alert.
func (h *recordingHandler) alerts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "channel" && a.Value.String() == "alert" {
				out = append(out, r.Message)
			}
			return true
		})
	}
	return out
}

// TestFullDeadLetterQueueDropsOldest: a dead letter that finds the
// dead-letter queue full makes room by dropping the oldest dead letters,
// with an alert; the queue it came from is not held up.
func TestFullDeadLetterQueueDropsOldest(t *testing.T) {
	dir := busDir(t)
	rec := &recordingHandler{}
	tr := open(t, dir, transit.Options{Capacity: transit.Capacity{Msgs: 6}, Logger: slog.New(rec)})
	ctx := ctxT(t, 60*time.Second)
	for i := range 6 {
		if err := tr.Send(ctx, transit.DeadLetterQueue, message.Message{"old": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Send(ctx, "victim", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	js := rawJS(t, dir)
	publishRaw(ctx, t, js, "mm.testhost.q.victim", []byte("bad0"), "")
	publishRaw(ctx, t, js, "mm.testhost.q.victim", []byte("bad1"), "")
	if err := tr.Send(ctx, "victim", message.Message{"n": 2}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	consumeNs(ctx, t, tr, "victim", 2)
	var got []string
	for _, m := range deadLetters(ctx, t, tr) {
		if raw, ok := m["raw"].(string); ok {
			got = append(got, raw)
		} else {
			got = append(got, fmt.Sprint("old", m["old"]))
		}
	}
	if want := "old2 old3 old4 old5 bad0 bad1"; strings.Join(got, " ") != want {
		t.Errorf("dead-letter queue: got %v, want %s", got, want)
	}
	if a := rec.alerts(); len(a) != 2 || !strings.Contains(a[0], "dead-letter queue is full") {
		t.Errorf("alerts: got %q, want two about the full dead-letter queue", a)
	}
}

// TestDeadLetterKeptInProgress: while a dead letter waits for room (the
// host scope's stream is full), its bus message stays in progress: the
// bus does not hand it out again after the ack wait. Once there is room
// it is dead-lettered once and the queue goes on.
func TestDeadLetterKeptInProgress(t *testing.T) {
	dir := busDir(t)
	const ackWait = time.Second
	tr := open(t, dir, transit.Options{Capacity: transit.Capacity{Bytes: 256 << 10}, AckWait: ackWait})
	ctx := ctxT(t, 90*time.Second)
	if err := tr.Send(ctx, transit.DeadLetterQueue, message.Message{"make": "the queue"}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Receive(ctx, transit.DeadLetterQueue); err != nil {
		t.Fatal(err)
	}
	if err := tr.Send(ctx, "victim", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	js := rawJS(t, dir)
	publishRaw(ctx, t, js, "mm.testhost.q.victim", []byte("bad"), "")
	if err := tr.Send(ctx, "victim", message.Message{"n": 2}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	// Fill the stream to the brim: not even a small dead letter fits.
	filled := 0
	for _, size := range []int{16 << 10, 1 << 10, 64, 0} {
		pad := strings.Repeat("p", size)
		for {
			err := tr.Send(ctx, "filler", message.Message{"pad": pad}, transit.SendOptions{NonBlocking: true})
			if errors.Is(err, transit.ErrFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			filled++
		}
	}
	cons, err := tr.Consume(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop()
	expectN := func(want int64) {
		t.Helper()
		select {
		case d := <-cons.C():
			if n, _ := message.Int(d.Msg["n"]); n != want {
				t.Fatalf("got %v, want n=%d", d.Msg, want)
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("no message n=%d", want)
		}
	}
	expectN(1)
	// The dead letter has no room now. Several ack waits pass: the bus
	// must not redeliver the bad message meanwhile. (Watching for
	// something that must not happen takes time by nature.)
	s, err := js.Stream(ctx, "MM_testhost")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Consumer(ctx, "q_victim")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * ackWait)
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("while waiting to be dead-lettered, the bad message was redelivered (%d redelivered; delivered %+v, ack floor %+v, pending %d)", info.NumRedelivered, info.Delivered, info.AckFloor, info.NumAckPending)
	}
	for range filled {
		if _, err := tr.Receive(ctx, "filler"); err != nil {
			t.Fatal(err)
		}
	}
	expectN(2)
	dls := deadLetters(ctx, t, tr)
	if len(dls) != 1 || dls[0]["raw"] != "bad" {
		t.Errorf("dead letters: got %v, want the bad message once", dls)
	}
}
