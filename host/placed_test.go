package host_test

import (
	"context"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// A task whose config places it (host, hosts, placement) is never hosted
// by a Host: a send to it goes to its queue in the cluster scope, where
// the box running it reads it, and not to this box's queue.
func TestPlacedTaskSendGoesToClusterScope(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	for _, cfg := range []map[string]any{{"host": "box2"}, {"hosts": []any{"box1"}}, {"placement": map[string]any{"any": true}}} {
		if !host.IsPlaced(cfg) {
			t.Errorf("IsPlaced(%v) = false", cfg)
		}
	}
	if host.IsPlaced(map[string]any{"is_external": 1}) || host.IsPlaced(nil) {
		t.Error("IsPlaced is true for a config without placement")
	}
	if err := f.h.Configure("Keeper", map[string]any{"host": "box2"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, err := transit.Open(ctx, transit.Options{StateDir: f.env.StateDir, Host: host.ClusterScope})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := f.h.Send(ctx, "Keeper", message.Message{"n": int64(7)}); err != nil {
		t.Fatal(err)
	}
	if err := f.h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := cluster.Receive(ctx, "Keeper")
	if err != nil {
		t.Fatalf("nothing in the cluster scope's Keeper queue: %v", err)
	}
	if n, _ := message.Int(got["n"]); n != 7 {
		t.Errorf("got %v, want n 7", got)
	}
	if f.h.Hosts("Keeper") {
		t.Error("the host loaded the placed task")
	}
	if msgs := rec.messages("Keeper"); len(msgs) != 0 {
		t.Errorf("the placed task ran on the host: %v", msgs)
	}
}
