package transit_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/transit"
)

// TestJetStreamHandle: the bus's JetStream handle keeps other state
// (a key-value bucket) on the same bus without it showing as a host
// scope, and a closed Transit gives no handle.
func TestJetStreamHandle(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	js, err := tr.JetStream()
	if err != nil {
		t.Fatalf("JetStream: %v", err)
	}
	if tr.Replicas() != 1 {
		t.Errorf("Replicas = %d, want the default 1", tr.Replicas())
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "MM_test"})
	if err != nil {
		t.Fatalf("create a bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	hosts, err := tr.Hosts(ctx)
	if err != nil || !slices.Equal(hosts, []string{"testhost"}) {
		t.Errorf("Hosts = %v, %v; want only testhost (a bucket is no host scope)", hosts, err)
	}
	tr.Close()
	if _, err := tr.JetStream(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("JetStream after Close: %v, want an error saying it is closed", err)
	}
}
