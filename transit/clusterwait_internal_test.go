package transit

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A stream the cluster cannot place yet is created again after a wait;
// one the servers have no room for is a storage error at once.
func TestClusterNotReady(t *testing.T) {
	api := func(code jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("create: %w", &jetstream.APIError{Code: 400, ErrorCode: code, Description: desc})
	}
	for _, tt := range []struct {
		name      string
		err       error
		notReady  bool
		noStorage bool
	}{
		{"peer offline", api(jsNoPeers, "no suitable peers for placement, peer offline"), true, false},
		{"peers not known yet", api(jsNoPeers, "no suitable peers for placement"), true, false},
		{"no storage on a cluster", api(jsNoPeers, "no suitable peers for placement, insufficient storage"), false, true},
		{"no storage on one server", api(jsInsufficientStorage, "insufficient storage resources available"), false, true},
		{"temporarily unavailable", api(jsNotAvailable, "JetStream system temporarily unavailable"), true, false},
		{"no leader", api(jsClusterNoLead, "JetStream cluster can not handle request"), true, false},
		{"another API error", api(10058, "stream name already in use with a different configuration"), false, false},
		{"not an API error", context.Canceled, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := clusterNotReady(tt.err); got != tt.notReady {
				t.Errorf("clusterNotReady: got %v, want %v", got, tt.notReady)
			}
			var apiErr *jetstream.APIError
			got := false
			if errors.As(tt.err, &apiErr) {
				got = noStorage(apiErr)
			}
			if got != tt.noStorage {
				t.Errorf("noStorage: got %v, want %v", got, tt.noStorage)
			}
		})
	}
}
