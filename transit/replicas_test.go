package transit_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/transit"
)

// TestReplicasNeedACluster: more than one replica is refused on the
// embedded bus (one server) before anything is started or created, and
// more than JetStream's five anywhere.
func TestReplicasNeedACluster(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	dir := t.TempDir()
	_, err := transit.Open(ctx, transit.Options{TransportDir: dir, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "3 replicas need a NATS cluster") {
		t.Errorf("Open with 3 replicas on the embedded bus: got %v, want a refusal naming the cluster", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("the refused Open left %d entries in the transport directory (started a bus?)", len(ents))
	}
	_, err = transit.Open(ctx, transit.Options{NATSURL: "nats://127.0.0.1:1", Replicas: 6})
	if err == nil || !strings.Contains(err.Error(), "at most 5") {
		t.Errorf("Open with 6 replicas: got %v, want a refusal naming the limit", err)
	}
}
