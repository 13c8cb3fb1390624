package router_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

// FuzzRouterConfig compiles arbitrary JSON configs: Compile must never
// panic, and a config that compiles must route a fuzzed message without
// panicking, delivering only copies that are not the input message.
func FuzzRouterConfig(f *testing.F) {
	if data, err := os.ReadFile("testdata/router.json"); err == nil {
		var file struct {
			Cases      []struct{ Config, Message json.RawMessage } `json:"cases"`
			GoCases    []struct{ Config, Message json.RawMessage } `json:"go_cases"`
			BadConfigs []struct{ Config json.RawMessage }          `json:"bad_configs"`
		}
		if err := json.Unmarshal(data, &file); err == nil {
			for _, c := range append(file.Cases, file.GoCases...) {
				f.Add([]byte(c.Config), []byte(c.Message))
			}
			for _, c := range file.BadConfigs {
				f.Add([]byte(c.Config), []byte(`{"a":"b"}`))
			}
		}
	}
	f.Add([]byte(`{"routes":{"1e400":{"match":{}}}}`), []byte(`{}`))
	f.Add([]byte(`{"routes":[{"match":{"a":" special/(?P<x>.)/i"},"transform":{"y":" specials/captures.x + message.a"},"forwards":[{"qname":"q","destination":"d"}],".router_control":{"short_circuit":"0"}}]}`),
		[]byte(`{"a":"Zed","static_forwards":[]}`))
	f.Add([]byte(`{"routes":[]}`), []byte(`{"static_forwards":[[{"forward":{"qname":"s"},"transform":{"t":" specials/len(message)"},"log_history":1},null,{"forward":[]}],"x"],".static_forwards_log":[]}`))
	f.Fuzz(func(t *testing.T, configJSON, msgJSON []byte) {
		var config map[string]any
		if json.Unmarshal(configJSON, &config) != nil {
			return
		}
		r, err := router.Compile(config)
		if err != nil {
			return
		}
		msg, err := message.Unmarshal(msgJSON)
		if err != nil {
			return
		}
		fwd := router.ForwarderFunc(func(_ context.Context, fwd router.Forward, m message.Message) error {
			if fwd.QName == "" {
				t.Errorf("delivery with an empty qname")
			}
			if len(m) > 0 && len(msg) > 0 && sameMap(m, msg) {
				t.Errorf("delivered the router's own message, not a copy")
			}
			return nil
		})
		_ = r.Route(t.Context(), msg, fwd)
		_ = r.Stats()
	})
}

// sameMap reports whether a and b are the same map (not merely equal).
func sameMap(a, b message.Message) bool {
	const probe = "\x00fuzz-probe"
	_, had := a[probe]
	if had {
		return false
	}
	a[probe] = true
	_, same := b[probe]
	delete(a, probe)
	return same
}
