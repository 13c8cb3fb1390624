package router_test

import (
	"context"
	"encoding/json"
	"fmt"
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
			if len(m) > 0 && len(msg) > 0 && message.Same(m, msg) {
				t.Errorf("delivered the router's own message, not a copy")
			}
			return nil
		})
		owned := msg.Copy()
		err = r.Route(t.Context(), msg, fwd)
		_ = r.Stats()
		// RouteOwned delivers the same, and nothing but the last
		// delivery may be the message itself.
		var plain, mine []string
		record := func(to *[]string, ds []delivery) {
			for _, d := range ds {
				b, err := message.Marshal(d.Msg)
				if err != nil {
					t.Fatalf("delivered message does not encode: %v", err)
				}
				*to = append(*to, d.Forward.String()+" "+string(b))
			}
		}
		var recA, recB recorder
		msgA := owned.Copy()
		errA := r.Route(t.Context(), msgA, &recA)
		errB := r.RouteOwned(t.Context(), owned, &recB)
		record(&plain, recA.deliveries())
		record(&mine, recB.deliveries())
		if fmt.Sprint(plain) != fmt.Sprint(mine) || fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Errorf("RouteOwned differs from Route:\n got %q, %v\nwant %q, %v", mine, errB, plain, errA)
		}
		if (err == nil) != (errA == nil) {
			t.Errorf("Route of equal messages: errors %v and %v", err, errA)
		}
		assertOwnership(t, true, owned, recB.deliveries(), errB == nil)
	})
}
