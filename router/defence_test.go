package router_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
	"github.com/multimodule/multimodule/transform"
)

// loopForwarder sends every delivery back through the Router, as a task
// that passes its input on (Router → task → Router) would.
type loopForwarder struct {
	r      *router.Router
	passes int
	err    error // how the loop ended
	q      []message.Message
}

func (l *loopForwarder) Forward(_ context.Context, _ router.Forward, msg message.Message) error {
	l.q = append(l.q, msg)
	return nil
}

func (l *loopForwarder) run(t *testing.T, msg message.Message) {
	t.Helper()
	l.q = []message.Message{msg}
	for len(l.q) > 0 {
		if l.passes > 1000 {
			t.Fatalf("still looping after %d passes", l.passes)
		}
		m := l.q[0]
		l.q = l.q[1:]
		if err := l.r.CountPass(m); err != nil {
			l.err = err
			return
		}
		l.passes++
		if err := l.r.RouteOwned(t.Context(), m, l); err != nil {
			t.Fatalf("RouteOwned: %v", err)
		}
	}
}

// A route whose target sends the message back to the Router used to loop
// forever. The passes are counted in the message's metadata; past
// max_passes the message is refused as a routing loop.
func TestRoutingLoopStops(t *testing.T) {
	loop := []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "Echo"}}}}
	for _, tt := range []struct {
		name   string
		config map[string]any
		want   int
	}{
		{"default", map[string]any{"routes": loop}, router.DefaultMaxPasses},
		{"configured", map[string]any{"routes": loop, "max_passes": 5}, 5},
		{"a transform that replaces the metadata", map[string]any{"routes": []any{map[string]any{
			"match":     map[string]any{},
			"transform": map[string]any{message.MetaKey: map[string]any{"note": "replaced"}},
			"forwards":  []any{map[string]any{"qname": "Echo"}},
		}}}, router.DefaultMaxPasses},
		{"static forwards that rebuild themselves", map[string]any{"routes": []any{}, "allow_control": false}, router.DefaultMaxPasses},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := &loopForwarder{r: mustCompile(t, tt.config)}
			msg := message.Message{"x": int64(1), message.MetaKey: map[string]any{"send_ts": 1.5}}
			if strings.HasPrefix(tt.name, "static") {
				// Each hop's transform puts the itinerary back.
				msg["static_forwards"] = []any{[]any{map[string]any{
					"forward":   map[string]any{"qname": "Echo"},
					"transform": map[string]any{"static_forwards": ` specials/[[{"forward": {"qname": "Echo"}, "transform": {"static_forwards": " specials/message.again"}}]]`},
				}}}
				msg["again"] = []any{[]any{map[string]any{"forward": map[string]any{"qname": "Echo"}}}}
				l.r = mustCompile(t, map[string]any{"routes": loop})
			}
			l.run(t, msg)
			if !errors.Is(l.err, router.ErrRoutingLoop) || !errors.Is(l.err, router.ErrRefused) {
				t.Fatalf("the loop ended with %v, want a routing loop refusal", l.err)
			}
			var ref *router.Refusal
			if !errors.As(l.err, &ref) || !strings.HasPrefix(ref.Reason, "routing loop") {
				t.Errorf("refusal: got %#v, want a reason starting with \"routing loop\"", ref)
			}
			if l.passes != tt.want {
				t.Errorf("passes: got %d, want %d", l.passes, tt.want)
			}
		})
	}
	for _, bad := range []any{0, -1, 1.5, "many", true} {
		_, err := router.Compile(map[string]any{"routes": loop, "max_passes": bad})
		if err == nil || !strings.Contains(err.Error(), "max_passes must be a whole number of at least 1") {
			t.Errorf("max_passes %v: got %v, want it refused", bad, err)
		}
	}
}

// Messages are data. A message that a task passes on must not reach the
// control plane through the Router: neither the control queue (a config
// that starts an external command) nor any task's .multimodule.transform
// (a state patch), on this host or another, unless the config says so.
func TestControlDataRefused(t *testing.T) {
	routeAll := []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "out"}}}}
	attacks := []struct {
		name string
		msg  string
	}{
		{"static forward to the control queue", `{"static_forwards":[[{"forward":{"qname":"MultiModule_control"}}]],
			".multimodule":{"config":{"Evil":{"is_external":true}}}}`},
		{"static forward to another host's control queue", `{"static_forwards":[[{"forward":{"qname":"MultiModule_control","destination":"box2"}}]]}`},
		{"static forward to the control queue among others", `{"static_forwards":[[{"forward":{"qname":"out"}},{"forward":{"qname":"MultiModule_control"}}]]}`},
		{"static forward carrying a state patch", `{"static_forwards":[[{"forward":{"qname":"Counter"}}]],".multimodule":{"transform":{"ct":0}}}`},
		{"static transform adding a state patch", `{"static_forwards":[[{"forward":{"qname":"Counter"},"transform":{".multimodule":{"transform":{"ct":0}}}}]]}`},
		{"static transform resetting the metadata", `{"static_forwards":[[{"forward":{"qname":"Counter"},"transform":{".ipc_transit_meta":{}}}]]}`},
		{"routed message carrying a state patch", `{"x":1,".multimodule":{"transform":{"ct":0}}}`},
	}
	for _, a := range attacks {
		for _, mode := range routeModes {
			t.Run(a.name+"/"+mode.name, func(t *testing.T) {
				r := mustCompile(t, map[string]any{"routes": routeAll})
				var rec recorder
				msg := mustMessage(t, a.msg)
				before := mustJSON(t, msg)
				err := mode.route(r, t.Context(), msg, &rec)
				if !errors.Is(err, router.ErrControl) || !errors.Is(err, router.ErrRefused) {
					t.Fatalf("got %v, want a control data refusal", err)
				}
				if got := rec.deliveries(); len(got) != 0 {
					t.Errorf("delivered %q, want nothing", summary(t, got))
				}
				if after := mustJSON(t, msg); after != before {
					t.Errorf("the refused message changed: got %s, want %s (for the dead letter)", after, before)
				}
			})
		}
		t.Run(a.name+"/allow_control", func(t *testing.T) {
			r := mustCompile(t, map[string]any{"routes": routeAll, "allow_control": true})
			var rec recorder
			if err := r.Route(t.Context(), mustMessage(t, a.msg), &rec); err != nil {
				t.Fatalf("Route: %v", err)
			}
			if len(rec.deliveries()) == 0 {
				t.Errorf("allow_control: nothing delivered")
			}
		})
	}

	// Configured routes: refused when compiled.
	for _, tt := range []struct {
		name, want string
		config     map[string]any
	}{
		{"a forward to the control queue", `forwards[0]: "MultiModule_control" is the control queue`,
			map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "MultiModule_control"}}}}}},
		{"a forward to a renamed control queue", `forwards[0]: "ctl" is the control queue`,
			map[string]any{"control_queue": "ctl", "routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "ctl"}}}}}},
		{"a transform that sets control data", `transform: sets .multimodule`,
			map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "transform": map[string]any{".multimodule": map[string]any{"transform": map[string]any{}}}}}}},
		{"allow_control not a bool", "allow_control must be true or false", map[string]any{"routes": []any{}, "allow_control": "yes"}},
		{"static_forwards not a bool", "static_forwards must be true or false", map[string]any{"routes": []any{}, "static_forwards": 0}},
	} {
		t.Run("config/"+tt.name, func(t *testing.T) {
			_, err := router.Compile(tt.config)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile: got %v, want an error containing %q", err, tt.want)
			}
			if _, ok := tt.config["allow_control"].(string); ok {
				return
			}
			if _, ok := tt.config["static_forwards"]; ok {
				return
			}
			tt.config["allow_control"] = true
			if _, err := router.Compile(tt.config); err != nil {
				t.Errorf("with allow_control: %v", err)
			}
		})
	}

	// static_forwards: false ignores itineraries: the routes apply.
	r := mustCompile(t, map[string]any{"routes": routeAll, "static_forwards": false})
	var rec recorder
	if err := r.Route(t.Context(), mustMessage(t, `{"static_forwards":[[{"forward":{"qname":"elsewhere"}}]]}`), &rec); err != nil {
		t.Fatalf("Route: %v", err)
	}
	if got := summary(t, rec.deliveries()); len(got) != 1 || !strings.HasPrefix(got[0], "out ") {
		t.Errorf("static_forwards: false: got %q, want the routes' delivery to out", got)
	}
}

// A transform that breaks its limits refuses the message as a whole (to
// be dead-lettered), instead of routing it on without the failed keys.
func TestTransformOverLimitsRefused(t *testing.T) {
	big := ` specials/repeat("` + strings.Repeat("a", 1000) + `", 30000)`
	t.Run("route", func(t *testing.T) {
		tr := map[string]any{"a": big, "b": big}
		r := mustCompile(t, map[string]any{"routes": []any{
			map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "first"}}},
			map[string]any{"match": map[string]any{}, "transform": tr, "forwards": []any{map[string]any{"qname": "second"}}},
		}})
		for _, mode := range routeModes {
			var rec recorder
			msg := message.Message{"x": int64(1)}
			err := mode.route(r, t.Context(), msg, &rec)
			if !errors.Is(err, router.ErrRefused) || !errors.Is(err, transform.ErrByteBudget) {
				t.Fatalf("%s: got %v, want a refusal for the byte budget", mode.name, err)
			}
			if got := summary(t, rec.deliveries()); len(got) != 1 || !strings.HasPrefix(got[0], "first ") {
				t.Errorf("%s: deliveries %q, want only the one before the transform", mode.name, got)
			}
			if _, ok := msg["a"]; ok {
				t.Errorf("%s: the refused message got key a", mode.name)
			}
		}
	})
	t.Run("static", func(t *testing.T) {
		keys := map[string]any{}
		for i := range 100 {
			keys[strings.Repeat("k", i+1)] = big
		}
		for _, tt := range []struct {
			name string
			tr   map[string]any
			want error
		}{
			{"too many expressions", keys, transform.ErrLimit},
			{"over the byte budget", map[string]any{"a": big, "b": big}, transform.ErrByteBudget},
		} {
			for _, mode := range routeModes {
				r := mustCompile(t, map[string]any{"routes": []any{}})
				msg := message.Message{"static_forwards": []any{[]any{
					map[string]any{"forward": map[string]any{"qname": "s1"}},
					map[string]any{"forward": map[string]any{"qname": "s2"}, "transform": tt.tr},
				}}}
				before := mustJSON(t, msg)
				var rec recorder
				err := mode.route(r, t.Context(), msg, &rec)
				if !errors.Is(err, router.ErrRefused) || !errors.Is(err, tt.want) {
					t.Fatalf("%s/%s: got %v, want a refusal for %v", tt.name, mode.name, err, tt.want)
				}
				if after := mustJSON(t, msg); after != before {
					t.Errorf("%s/%s: the refused message is %s, want it as it came", tt.name, mode.name, after)
				}
			}
		}
	})
}

// One hop of a message's itinerary gets one copy of the message per
// forward: a hop of thousands of forwards in a large message would make
// gigabytes of copies. More than MaxStaticEntries is refused.
func TestStaticHopSizeLimited(t *testing.T) {
	hop := func(n int) message.Message {
		entries := make([]any, n)
		for i := range entries {
			entries[i] = map[string]any{"forward": map[string]any{"qname": "q"}}
		}
		return message.Message{"big": strings.Repeat("x", 1000), "static_forwards": []any{entries}}
	}
	r := mustCompile(t, map[string]any{"routes": []any{}})
	var rec recorder
	if err := r.Route(t.Context(), hop(router.MaxStaticEntries), &rec); err != nil || len(rec.deliveries()) != router.MaxStaticEntries {
		t.Fatalf("a hop of %d forwards: got %v and %d deliveries", router.MaxStaticEntries, err, len(rec.deliveries()))
	}
	var none recorder
	msg := hop(router.MaxStaticEntries + 1)
	err := r.RouteOwned(t.Context(), msg, &none)
	if !errors.Is(err, router.ErrRefused) || !errors.Is(err, router.ErrLimit) || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("a hop of %d forwards: got %v, want it refused", router.MaxStaticEntries+1, err)
	}
	if len(none.deliveries()) != 0 {
		t.Errorf("delivered %d copies, want none", len(none.deliveries()))
	}
	if _, ok := msg["static_forwards"]; !ok {
		t.Errorf("the refused message lost its itinerary")
	}
}
