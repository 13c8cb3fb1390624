package router_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

// BenchmarkRoute10Routes routes one 8-key message through 10 routes of
// which one matches, with one forward (the per-forward copy included) to a
// Forwarder that does nothing.
func BenchmarkRoute10Routes(b *testing.B) {
	benchRoute10(b, (*router.Router).Route)
}

// BenchmarkRouteOwned10Routes is BenchmarkRoute10Routes through
// RouteOwned, as the Router task routes: the one forward takes the message
// itself, so no copy is made. (The no-op Forwarder leaves the message
// unchanged, so the benchmark may route it again.)
func BenchmarkRouteOwned10Routes(b *testing.B) {
	benchRoute10(b, (*router.Router).RouteOwned)
}

func benchRoute10(b *testing.B, route func(*router.Router, context.Context, message.Message, router.Forwarder) error) {
	routes := make([]any, 10)
	for i := range routes {
		routes[i] = map[string]any{
			"match":    map[string]any{"source": fmt.Sprintf("Task%d", i), "level": "info"},
			"forwards": []any{map[string]any{"qname": fmt.Sprintf("q%d", i)}},
		}
	}
	r, err := router.Compile(map[string]any{"routes": routes})
	if err != nil {
		b.Fatal(err)
	}
	msg := message.Message{
		"source": "Task7", "ct": int64(42), "outstr": "howdy", "host": "web12",
		"level": "info", "value": 3.25, "tags": "a", "id": int64(7),
	}
	var n int
	f := router.ForwarderFunc(func(context.Context, router.Forward, message.Message) error { n++; return nil })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := route(r, ctx, msg, f); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no deliveries")
	}
}
