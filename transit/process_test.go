package transit_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// consumerEnv is the environment of a consumerMain child.
func consumerEnv(dir, queue string, count, maxDeliver int) []string {
	return []string{"MM_DIR=" + dir, "MM_QUEUE=" + queue, "MM_COUNT=" + strconv.Itoa(count),
		"MM_MAXDELIVER=" + strconv.Itoa(maxDeliver), "MM_ACKWAIT=2s"}
}

type handled struct {
	N          int64 `json:"n"`
	Deliveries int   `json:"deliveries"`
}

func parseHandled(t *testing.T, line string) handled {
	t.Helper()
	var h handled
	if err := json.Unmarshal([]byte(line), &h); err != nil {
		t.Fatalf("consumer printed %q: %v", line, err)
	}
	return h
}

func TestCrossProcessSendReceive(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	const n = 300
	// The receiver is a real `multimodule recv` process, started first so
	// it waits for messages.
	recv := startChild(t, "main", []string{"recv", "-T", dir, "--host", "testhost", "--count", strconv.Itoa(n), "--timeout", "50s", "xq"})
	for i := range n {
		if err := tr.SendAsync(ctx, "xq", message.Message{"i": i, "big": int64(1) << 60}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m, err := message.Unmarshal([]byte(recv.line(t, 30*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := message.Int(m["i"]); got != int64(i) || m["big"] != int64(1)<<60 {
			t.Fatalf("message %d: got %v, want i=%d and big=2^60 exactly", i, m, i)
		}
	}
	if err := recv.wait(t, 30*time.Second); err != nil {
		t.Errorf("recv process: %v", err)
	}
}

// A consumer process killed with SIGKILL in the middle of a message: the
// next consumer gets that message again, then the rest, in order.
func TestConsumerKilledMidMessage(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	release := filepath.Join(t.TempDir(), "release")
	for i := 1; i <= 6; i++ {
		m := message.Message{"n": i}
		if i == 3 {
			m["block_unless"] = release
		}
		if err := tr.Send(ctx, "work", m, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	first := startChild(t, "consumer", nil, consumerEnv(dir, "work", 100, 5)...)
	for want := int64(1); want <= 3; want++ {
		if h := parseHandled(t, first.line(t, 30*time.Second)); h.N != want {
			t.Fatalf("first consumer: got n=%d, want %d", h.N, want)
		}
	}
	// It now blocks inside message 3: kill it there.
	killBlocked(t, first, release)
	// The second consumer may repeat messages the first handled but had
	// not acknowledged yet (at least once), then goes on in order.
	second := startChild(t, "consumer", nil, consumerEnv(dir, "work", 100, 5)...)
	h := parseHandled(t, second.line(t, 30*time.Second))
	if h.N > 3 {
		t.Fatalf("second consumer: started at n=%d, want <= 3 (message 3 lost)", h.N)
	}
	if h.Deliveries < 2 {
		t.Errorf("second consumer: first message has deliveries=%d, want >= 2", h.Deliveries)
	}
	for want := h.N + 1; want <= 6; want++ {
		if h := parseHandled(t, second.line(t, 30*time.Second)); h.N != want {
			t.Fatalf("second consumer: got n=%d, want %d", h.N, want)
		}
	}
	waitFor(t, 10*time.Second, func() error {
		st, err := tr.Stat(ctx, "work")
		if err != nil || st.Msgs != 0 {
			return fmt.Errorf("Stat: got %+v, %v; want an empty queue", st, err)
		}
		return nil
	})
}

// A message that kills every consumer that takes it ends in the
// dead-letter queue with the reason, and the queue moves on.
func TestPoisonMessageDeadLettered(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 90*time.Second)
	const maxDeliver = 3
	msgs := []message.Message{{"n": 1}, {"n": 2, "poison": true, "payload": "keep me"}, {"n": 3}}
	for _, m := range msgs {
		if err := tr.Send(ctx, "fragile", m, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var deaths int
	stoppedBefore := false
	for {
		c := startChild(t, "consumer", nil, consumerEnv(dir, "fragile", 1, maxDeliver)...)
		var seen []int64
		for l := range c.lines {
			seen = append(seen, parseHandled(t, l).N)
		}
		err := c.wait(t, 30*time.Second)
		if err == nil {
			if len(seen) > 0 && seen[len(seen)-1] == 3 {
				break
			}
			// A consumer stops after one acknowledged message: the first
			// may stop before message 2 reaches it, and the next one gets
			// it. Only message 1 can be handled before the poison.
			if stoppedBefore || len(seen) != 1 || seen[0] != 1 {
				t.Fatalf("surviving consumer handled %v, want to end with 3", seen)
			}
			stoppedBefore = true
			continue
		}
		deaths++
		if deaths > maxDeliver+1 {
			t.Fatalf("consumer died %d times; the poison message was not dead-lettered (last run handled %v)", deaths, seen)
		}
	}
	if deaths < maxDeliver {
		t.Errorf("consumer died %d times, want at least MaxDeliver=%d before dead-lettering", deaths, maxDeliver)
	}
	dl, err := tr.TryReceive(ctx, transit.DeadLetterQueue)
	if err != nil {
		t.Fatalf("dead-letter queue: %v", err)
	}
	if n, _ := message.Int(dl["n"]); n != 2 || dl["payload"] != "keep me" {
		t.Errorf("dead letter: got %v, want message n=2 with its payload", dl)
	}
	info, _ := dl.Meta()["dead_letter"].(map[string]any)
	reason, _ := info["reason"].(string)
	if info["queue"] != "fragile" || !strings.Contains(reason, "stopped") {
		t.Errorf("dead_letter meta: got %v, want queue=fragile and a reason", info)
	}
	if d, _ := message.Int(info["deliveries"]); d < maxDeliver {
		t.Errorf("dead_letter deliveries: got %d, want >= %d", d, maxDeliver)
	}
}

// The bus killed with SIGKILL: the next use starts a new bus on the same
// store and every message whose Send returned nil is still delivered.
func TestBusKilledKeepsAcknowledgedMessages(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 90*time.Second)
	const n = 1000
	for i := range n {
		send := tr.SendAsync
		if i == n-1 {
			send = tr.Send
		}
		if err := send(ctx, "durable", message.Message{"i": i}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	old, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopBus(t, dir, syscall.SIGKILL)

	// The existing Transit reconnects through a new bus.
	if err := tr.Send(ctx, "durable", message.Message{"i": n}, transit.SendOptions{}); err != nil {
		t.Fatalf("Send after the bus died: %v", err)
	}
	cur, err := transit.ReadBusInfo(dir)
	if err != nil || cur.PID == old.PID || !cur.Alive() {
		t.Fatalf("bus after restart: got %+v (%v), want a new live bus (old pid %d)", cur, err, old.PID)
	}
	// A fresh process-like Transit reads everything, in order.
	tr2 := open(t, dir, transit.Options{})
	for i := 0; i <= n; i++ {
		m, err := tr2.Receive(ctx, "durable")
		if err != nil {
			t.Fatalf("Receive %d: %v", i, err)
		}
		if got, _ := message.Int(m["i"]); got != int64(i) {
			t.Fatalf("Receive: got i=%d, want %d", got, i)
		}
	}
	if m, err := tr2.TryReceive(ctx, "durable"); err == nil {
		t.Errorf("extra message after all: %v", m)
	}
}

// killBlocked kills consumer c (blocked inside a message with
// block_unless) with SIGKILL, checks it died of it, and then creates the
// release file so that the next consumer gets past that message.
func killBlocked(t *testing.T, c *child, release string) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGKILL)
	if err := c.wait(t, 10*time.Second); err == nil {
		t.Fatal("first consumer: exited cleanly, want killed")
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}
