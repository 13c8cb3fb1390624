package host_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// A bus delivery handled again (its queue taken over from an ack floor
// behind it) makes the same sends into the cluster scope with the same
// message IDs, so the bus stores what it forwards to a placed task once:
// the placed task's exactly-once state needs its input stored once. Here
// the Router forwards a message from its bus queue to a placed task's
// queue; then its consumer is reset to the start, the Router handles the
// message again, and the placed task's queue still holds one copy.
func TestReplayedForwardToPlacedTaskStoredOnce(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := f.h.Configure("Keeper", map[string]any{"host": "box2"}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Configure("Router", map[string]any{"routes": []any{map[string]any{
		"match": map[string]any{"kind": "fwd"}, "forwards": []any{map[string]any{"qname": "Keeper"}}}}}); err != nil {
		t.Fatal(err)
	}
	cluster, err := transit.Open(ctx, transit.Options{StateDir: f.env.StateDir, Host: host.ClusterScope})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	tr := f.env.Client()
	js := rawBusJS(t, filepath.Join(f.env.StateDir, "transit"))
	stream, consumer := "MM_"+tr.HostName(), "q_Router"
	// The stream keeps a message while a consumer has not acknowledged
	// it: a second consumer keeps the Router's messages for the replay.
	if _, err := tr.InProcess().Send(ctx, "Router", message.Message{"kind": "none"}, nil, transit.HostSendOptions{BusOnly: true}); err != nil {
		t.Fatal(err)
	}
	rc, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "hold", FilterSubject: rc.CachedInfo().Config.FilterSubject,
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy}); err != nil {
		t.Fatal(err)
	}

	// The Router takes n 1 from its bus queue and forwards it.
	if _, err := tr.InProcess().Send(ctx, "Router", message.Message{"kind": "fwd", "n": int64(1)}, nil, transit.HostSendOptions{BusOnly: true}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, func() error {
		st, err := cluster.Stat(ctx, "Keeper")
		if err != nil || st.Msgs != 1 {
			return fmt.Errorf("Keeper's queue: %+v, %v; want 1 message", st, err)
		}
		return acked(ctx, js, stream, consumer, 2)
	})
	// Delivered again from the start: handled again, forwarded again.
	resetConsumer(t, ctx, js, stream, consumer, 1)
	waitUntil(t, 30*time.Second, func() error { return acked(ctx, js, stream, consumer, 2) })
	// n 2 goes the same way, behind the copy if there is one.
	if _, err := tr.InProcess().Send(ctx, "Router", message.Message{"kind": "fwd", "n": int64(2)}, nil, transit.HostSendOptions{BusOnly: true}); err != nil {
		t.Fatal(err)
	}
	var got []int64
	for len(got) == 0 || got[len(got)-1] != 2 {
		m, err := cluster.Receive(ctx, "Keeper")
		if err != nil {
			t.Fatalf("Keeper's queue after %v: %v", got, err)
		}
		n, _ := message.Int(m["n"])
		got = append(got, n)
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("Keeper's queue held %v, want [1 2]: the forward made again was stored again", got)
	}
}

// acked reports whether consumer's acknowledgements reached stream
// sequence seq since its last reset, with nothing pending.
func acked(ctx context.Context, js jetstream.JetStream, stream, consumer string, seq uint64) error {
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	if info.AckFloor.Stream < seq || info.NumAckPending != 0 {
		return fmt.Errorf("consumer %s: ack floor %d, %d pending (delivered %+v, %d waiting, %d waiting requests); want %d, 0", consumer, info.AckFloor.Stream, info.NumAckPending, info.Delivered, info.NumPending, info.NumWaiting, seq)
	}
	return nil
}

// resetConsumer makes the bus deliver again, from stream sequence seq, what
// consumer had delivered.
func resetConsumer(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, consumer string, seq uint64) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"seq": seq})
	resp, err := js.Conn().RequestWithContext(ctx, fmt.Sprintf("$JS.API.CONSUMER.RESET.%s.%s", stream, consumer), req)
	if err != nil {
		t.Fatalf("reset %s: %v", consumer, err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil || r.Error != nil {
		t.Fatalf("reset %s: %s, %v", consumer, resp.Data, err)
	}
}

// rawBusJS is a JetStream client of the bus of transport directory dir.
func rawBusJS(t *testing.T, dir string) jetstream.JetStream {
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
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitUntil polls f until it returns nil or total passes.
func waitUntil(t *testing.T, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	delay := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
}
