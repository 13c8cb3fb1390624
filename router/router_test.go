package router_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

func TestCompileErrors(t *testing.T) {
	fwd := []any{map[string]any{"qname": "q"}}
	tests := []struct {
		name   string
		config map[string]any
		want   string // the error must contain this
	}{
		{"routes null", map[string]any{"routes": nil}, "router: routes must be a list or a map with numeric keys, got null"},
		{"routes a number", map[string]any{"routes": int64(3)}, "got a number"},
		{"non-numeric map key", map[string]any{"routes": map[string]any{"1": map[string]any{"match": map[string]any{}}, "abc": map[string]any{"match": map[string]any{}}}},
			`router: routes: key "abc" is not a number`},
		{"NaN map key", map[string]any{"routes": map[string]any{"NaN": map[string]any{"match": map[string]any{}}}}, `key "NaN" is not a number`},
		{"route 3 named by index", map[string]any{"routes": []any{
			map[string]any{"match": map[string]any{}}, map[string]any{"match": map[string]any{}}, map[string]any{"match": map[string]any{}},
			map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "ok"}, map[string]any{"qname": int64(5)}}},
		}}, "router: route 3: forwards[1]: qname must be a string, got a number"},
		{"map route named by key", map[string]any{"routes": map[string]any{"20": map[string]any{"match": "x"}}}, "router: route 20: match must be a map, got a string"},
		{"match null", map[string]any{"routes": []any{map[string]any{"match": nil}}}, "route 0: match must be a map, got null"},
		{"bad regex", map[string]any{"routes": []any{map[string]any{"match": map[string]any{"a": " special/(/"}}}},
			`router: route 0: match: at "a": bad regex " special/(/"`},
		{"bad regex flag", map[string]any{"routes": []any{map[string]any{"match": map[string]any{"a": " special/x/q"}}}},
			`router: route 0: match: at "a": bad regex " special/x/q": unknown flag 'q'`},
		{"bad transform special", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "transform": map[string]any{"x": " specials/(("}}}},
			`router: route 0: transform: key "x": special`},
		{"forwards a string", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": "q"}}}, "route 0: forwards must be a list, got a string"},
		{"qname a list", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": []any{}}}}}},
			"route 0: forwards[0]: qname must be a string, got a list"},
		{"qname null", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": nil}}}}},
			"route 0: forwards[0]: qname must be a string, got null"},
		{"qname empty", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": ""}}}}},
			"route 0: forwards[0]: qname must not be empty"},
		{"destination a number", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "q", "destination": int64(2)}}}}},
			"route 0: forwards[0]: destination must be a string, got a number"},
		{"router_control a bool", map[string]any{"routes": []any{map[string]any{"match": map[string]any{}, "forwards": fwd, ".router_control": true}}},
			"route 0: .router_control must be a map, got a bool"},
		{"not JSON-compatible", map[string]any{"routes": []any{map[string]any{"match": map[string]any{"a": make(chan int)}}}},
			"router: routes: message: not JSON-compatible"},
		{"map with int keys", map[string]any{"routes": map[int]any{1: map[string]any{"match": map[string]any{}}}},
			"router: routes: message: not JSON-compatible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := router.Compile(tt.config)
			if err == nil {
				t.Fatalf("Compile: got a router with %v, want an error", r.Stats())
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCompileAccepts(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]any
		want   int // routes to count via deliveries of an empty message to match: {}
	}{
		{"empty route list", map[string]any{"routes": []any{}}, 0},
		{"empty route map", map[string]any{"routes": map[string]any{}}, 0},
		{"null optional fields", map[string]any{"routes": []any{map[string]any{
			"match": map[string]any{}, "transform": nil, ".router_control": nil,
			"forwards": []any{map[string]any{"qname": "q", "destination": nil}}}}}, 1},
		{"other config keys ignored", map[string]any{"is_external": false, "intervals": map[string]any{"x": 1},
			"routes": []any{map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "q"}}}}}, 1},
		{"unknown route keys ignored", map[string]any{"routes": []any{map[string]any{"name": "audit", "match": map[string]any{},
			"forwards": []any{map[string]any{"qname": "q", "note": "x"}}}}}, 1},
		{"Go-typed config", map[string]any{"routes": []map[string]any{{"match": map[string]string{}, "forwards": []map[string]string{{"qname": "q"}}}}}, 1},
		{"Message-typed route", map[string]any{"routes": []any{message.Message{"match": message.Message{}, "forwards": []any{message.Message{"qname": "q"}}}}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCompile(t, tt.config)
			var rec recorder
			if err := r.Route(t.Context(), message.Message{}, &rec); err != nil {
				t.Fatalf("Route: %v", err)
			}
			if got := len(rec.deliveries()); got != tt.want {
				t.Errorf("deliveries: got %d, want %d", got, tt.want)
			}
		})
	}
}

// routeAll is a config helper: one route per qname, each matching
// everything and forwarding to that queue.
func routeAll(qnames ...string) []any {
	out := make([]any, len(qnames))
	for i, q := range qnames {
		out[i] = map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": q}}}
	}
	return out
}

func qnames(ds []delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Forward.String()
	}
	return out
}

func TestNumberedMapOrder(t *testing.T) {
	rs := routeAll("a", "b", "c", "d", "e", "f")
	r := mustCompile(t, map[string]any{"routes": map[string]any{
		"10": rs[0], "-1": rs[1], "1.5": rs[2], "2": rs[3], "1e1": rs[4], "02": rs[5],
	}})
	var rec recorder
	if err := r.Route(t.Context(), message.Message{}, &rec); err != nil {
		t.Fatalf("Route: %v", err)
	}
	// -1 < 1.5 < 02 = 2 < 10 = 1e1; ties by key text ("02" < "2", "10" < "1e1").
	want := []string{"b", "c", "f", "d", "a", "e"}
	if got := qnames(rec.deliveries()); !reflect.DeepEqual(got, want) {
		t.Errorf("order: got %v, want %v", got, want)
	}
}

func TestShortCircuitTruth(t *testing.T) {
	tests := []struct {
		name  string
		value any
		want  []string
	}{
		{"true", true, []string{"first"}},
		{"1", int64(1), []string{"first"}},
		{"yes", "yes", []string{"first"}},
		{"false", false, []string{"first", "second"}},
		{"0", int64(0), []string{"first", "second"}},
		{"string 0", "0", []string{"first", "second"}},
		{"empty string", "", []string{"first", "second"}},
		{"null", nil, []string{"first", "second"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := routeAll("first", "second")
			rs[0].(map[string]any)[".router_control"] = map[string]any{"short_circuit": tt.value}
			r := mustCompile(t, map[string]any{"routes": rs})
			var rec recorder
			if err := r.Route(t.Context(), message.Message{}, &rec); err != nil {
				t.Fatalf("Route: %v", err)
			}
			if got := qnames(rec.deliveries()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("deliveries: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSpecExample is the route of the documented example config.
func TestSpecExample(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": []any{
		map[string]any{
			"match":           map[string]any{"source": "Example1"},
			"transform":       map[string]any{"seen_by": "router"},
			"forwards":        []any{map[string]any{"qname": "Example2"}, map[string]any{"qname": "audit", "destination": "box2"}},
			".router_control": map[string]any{"short_circuit": true},
		},
		map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "fallback"}}},
	}})
	tests := []struct {
		name string
		msg  string
		want []string
	}{
		{"from Example1", `{"source":"Example1","ct":5}`, []string{
			`Example2 {"ct":5,"seen_by":"router","source":"Example1"}`,
			`audit@box2 {"ct":5,"seen_by":"router","source":"Example1"}`,
		}},
		{"from elsewhere", `{"source":"Other"}`, []string{`fallback {"source":"Other"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			if err := r.Route(t.Context(), mustMessage(t, tt.msg), &rec); err != nil {
				t.Fatalf("Route: %v", err)
			}
			if got := summary(t, rec.deliveries()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("deliveries:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRouteModifiesMessage(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{}, "transform": map[string]any{"x": int64(1)}},
	}})
	msg := message.Message{"a": "b"}
	if err := r.Route(t.Context(), msg, &recorder{}); err != nil {
		t.Fatalf("Route: %v", err)
	}
	if got, want := mustJSON(t, msg), `{"a":"b","x":1}`; got != want {
		t.Errorf("message after Route: got %s, want %s", got, want)
	}
}

// TestConfigNotAliased checks that a delivered message shares nothing
// with the router's config, so one consumer cannot change what the next
// message gets.
func TestConfigNotAliased(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": []any{map[string]any{
		"match":     map[string]any{},
		"transform": map[string]any{"tags": []any{"a"}, "meta": map[string]any{"k": "v"}},
		"forwards":  []any{map[string]any{"qname": "q"}},
	}}})
	want := `q {"meta":{"k":"v"},"tags":["a"]}`
	for i := range 2 {
		var rec recorder
		if err := r.Route(t.Context(), message.Message{}, &rec); err != nil {
			t.Fatalf("Route %d: %v", i, err)
		}
		ds := rec.deliveries()
		if got := summary(t, ds); len(got) != 1 || got[0] != want {
			t.Fatalf("Route %d: got %q, want [%q]", i, got, want)
		}
		scribble(ds[0].Msg)
	}
}

// TestRouteOwnedGivesAwayTheLast checks that RouteOwned saves the copy of
// the last delivery when nothing can observe msg after it, and only then.
func TestRouteOwnedGivesAwayTheLast(t *testing.T) {
	fwd := func(q string) []any { return []any{map[string]any{"qname": q}} }
	tests := []struct {
		name   string
		routes []any
		msg    string
		want   []string
		given  bool // the last delivery is msg itself
	}{
		{"one forward", routeAll("q"), `{"a":1}`, []string{`q {"a":1}`}, true},
		{"two routes", routeAll("q1", "q2"), `{"a":1}`, []string{`q1 {"a":1}`, `q2 {"a":1}`}, true},
		{"a later transform is not seen by the earlier delivery", []any{
			map[string]any{"match": map[string]any{}, "forwards": fwd("q1")},
			map[string]any{"match": map[string]any{}, "transform": map[string]any{"x": int64(1)}, "forwards": fwd("q2")},
		}, `{"a":1}`, []string{`q1 {"a":1}`, `q2 {"a":1,"x":1}`}, true},
		{"a transform after the last delivery keeps the copy", []any{
			map[string]any{"match": map[string]any{}, "forwards": fwd("q1")},
			map[string]any{"match": map[string]any{}, "transform": map[string]any{"x": int64(1)}},
		}, `{"a":1}`, []string{`q1 {"a":1}`}, false},
		{"static hop", routeAll("routed"), `{"static_forwards":[[{"forward":{"qname":"s1"}},{"forward":{"qname":"s2"},"transform":{"t":2}}]]}`,
			[]string{`s1 {}`, `s2 {"t":2}`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCompile(t, map[string]any{"routes": tt.routes})
			msg := mustMessage(t, tt.msg)
			var rec recorder
			if err := r.RouteOwned(t.Context(), msg, &rec); err != nil {
				t.Fatalf("RouteOwned: %v", err)
			}
			ds := rec.deliveries()
			if got := summary(t, ds); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("deliveries:\n got %q\nwant %q", got, tt.want)
			}
			if got := message.Same(ds[len(ds)-1].Msg, msg); got != tt.given {
				t.Errorf("last delivery is the routed message itself: got %v, want %v", got, tt.given)
			}
			assertOwnership(t, true, msg, ds, true)
			assertNoAliasing(t, ds)
		})
	}
}

// TestRouteCopiesAfterTransforms: deliveries after a transform that adds
// or replaces containers get copies of the transformed message, none
// shared (the Router's Copier must learn the message again after every
// transform).
func TestRouteCopiesAfterTransforms(t *testing.T) {
	fwd := func(q string) []any { return []any{map[string]any{"qname": q}} }
	routes := []any{
		map[string]any{"match": map[string]any{}, "forwards": fwd("q1")},
		map[string]any{"match": map[string]any{}, "forwards": fwd("q2"),
			"transform": map[string]any{"m": map[string]any{"new": int64(1)}, "extra": []any{int64(1), map[string]any{"k": "v"}}}},
		map[string]any{"match": map[string]any{}, "forwards": fwd("q3")},
		map[string]any{"match": map[string]any{}, "forwards": fwd("q4")},
	}
	after := `{"a":1,"extra":[1,{"k":"v"}],"m":{"new":1}}`
	want := []string{`q1 {"a":1,"m":{"old":1}}`, "q2 " + after, "q3 " + after, "q4 " + after}
	for _, owned := range []bool{false, true} {
		t.Run(map[bool]string{false: "Route", true: "RouteOwned"}[owned], func(t *testing.T) {
			r := mustCompile(t, map[string]any{"routes": routes})
			msg := mustMessage(t, `{"a":1,"m":{"old":1}}`)
			var rec recorder
			route := r.Route
			if owned {
				route = r.RouteOwned
			}
			if err := route(t.Context(), msg, &rec); err != nil {
				t.Fatalf("route: %v", err)
			}
			ds := rec.deliveries()
			if got := summary(t, ds); !reflect.DeepEqual(got, want) {
				t.Fatalf("deliveries:\n got %q\nwant %q", got, want)
			}
			assertOwnership(t, owned, msg, ds, true)
			assertNoAliasing(t, ds)
		})
	}
}

func TestRouteErrors(t *testing.T) {
	errRefused := errors.New("queue full")
	config := map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{}, "transform": map[string]any{"bad": " specials/message.nope.deeper", "good": "yes"},
			"forwards": []any{map[string]any{"qname": "q1"}, map[string]any{"qname": "q2", "destination": "box2"}}},
		map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "q3"}}},
	}}
	for _, mode := range routeModes {
		t.Run(mode.name, func(t *testing.T) { testRouteErrors(t, config, errRefused, mode.route, mode.owned) })
	}
}

func testRouteErrors(t *testing.T, config map[string]any, errRefused error, route func(*router.Router, context.Context, message.Message, router.Forwarder) error, owned bool) {
	r := mustCompile(t, config)
	rec := &recorder{fail: map[string]error{"q2@box2": errRefused}}
	msg := message.Message{"a": "b"}
	err := route(r, t.Context(), msg, rec)
	assertOwnership(t, owned, msg, rec.deliveries(), err == nil)
	if err == nil {
		t.Fatal("Route: got nil error, want the transform and forward failures")
	}
	for _, want := range []string{`router: route 0: transform: key "bad"`, `router: route 0: forward to "q2@box2": queue full`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error: got %q, want it to contain %q", err, want)
		}
	}
	if !errors.Is(err, errRefused) {
		t.Errorf("errors.Is(err, errRefused): got false, want true")
	}
	wantDeliveries := []string{`q1 {"a":"b","good":"yes"}`, `q3 {"a":"b","good":"yes"}`}
	if got := summary(t, rec.deliveries()); !reflect.DeepEqual(got, wantDeliveries) {
		t.Errorf("deliveries:\n got %q\nwant %q", got, wantDeliveries)
	}
	wantStats := map[string]router.QueueStats{
		"q1":      {Matched: 1, Forwarded: 1},
		"q2@box2": {Matched: 1, Failed: 1},
		"q3":      {Matched: 1, Forwarded: 1},
	}
	if got := r.Stats(); !reflect.DeepEqual(got, wantStats) {
		t.Errorf("Stats: got %v, want %v", got, wantStats)
	}
}

func TestRouteBadArguments(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": routeAll("q")})
	var nilRouter *router.Router
	tests := []struct {
		name string
		r    *router.Router
		msg  message.Message
		f    router.Forwarder
		want error
	}{
		{"nil router", nilRouter, message.Message{}, &recorder{}, router.ErrNilRouter},
		{"nil message", r, nil, &recorder{}, router.ErrNilMessage},
		{"nil forwarder", r, message.Message{}, nil, router.ErrNilForwarder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.r.Route(t.Context(), tt.msg, tt.f); !errors.Is(err, tt.want) {
				t.Errorf("Route: got %v, want %v", err, tt.want)
			}
		})
	}
	if got := nilRouter.Stats(); len(got) != 0 {
		t.Errorf("nil router Stats: got %v, want empty", got)
	}
}

func TestRouteStopsWhenContextDone(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": routeAll("q1", "q2")})
	ctx, cancel := context.WithCancel(t.Context())
	var rec recorder
	f := router.ForwarderFunc(func(ctx context.Context, fwd router.Forward, msg message.Message) error {
		cancel() // the first delivery shuts the router down
		return rec.Forward(ctx, fwd, msg)
	})
	err := r.Route(ctx, message.Message{}, f)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Route: got %v, want an error wrapping context.Canceled", err)
	}
	if got, want := qnames(rec.deliveries()), []string{"q1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("deliveries: got %v, want %v", got, want)
	}
}

func TestStaticForwards(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": routeAll("routed")})
	tests := []staticCase{
		{
			name:      "transform and log_history together, with destination",
			msg:       `{"x":1,"static_forwards":[[{"forward":{"qname":"s1","destination":"box2"},"transform":{"hop":"one"},"log_history":true}]]}`,
			want:      []string{`s1@box2 {".static_forwards_log":{"forward_history":[{"forward":{"destination":"box2","qname":"s1"},"log_history":true,"transform":{"hop":"one"}}]},"hop":"one","x":1}`},
			wantAfter: `{"x":1}`,
		},
		{
			name:      "history is appended to an existing log",
			msg:       `{".static_forwards_log":{"forward_history":[{"forward":{"qname":"s0"}}],"other":1},"static_forwards":[[{"forward":{"qname":"s1"},"log_history":1}]]}`,
			want:      []string{`s1 {".static_forwards_log":{"forward_history":[{"forward":{"qname":"s0"}},{"forward":{"qname":"s1"},"log_history":1}],"other":1}}`},
			wantAfter: `{".static_forwards_log":{"forward_history":[{"forward":{"qname":"s0"}}],"other":1}}`,
		},
		{
			name:      "a non-map log is replaced",
			msg:       `{".static_forwards_log":"junk","static_forwards":[[{"forward":{"qname":"s1"},"log_history":1}]]}`,
			want:      []string{`s1 {".static_forwards_log":{"forward_history":[{"forward":{"qname":"s1"},"log_history":1}]}}`},
			wantAfter: `{".static_forwards_log":"junk"}`,
		},
		{
			name: "false log_history logs nothing",
			msg:  `{"static_forwards":[[{"forward":{"qname":"s1"},"log_history":0}]]}`,
			want: []string{`s1 {}`}, wantAfter: `{}`,
		},
		{
			name: "transform special sees the message",
			msg:  `{"n":2,"static_forwards":[[{"forward":{"qname":"s1"},"transform":{"m":" specials/message.n * 10"}}]]}`,
			want: []string{`s1 {"m":20,"n":2}`}, wantAfter: `{"n":2}`,
		},
		{
			name:      "a bad entry is reported, the others delivered",
			msg:       `{"static_forwards":[["s0",{"forward":{"qname":"s1"}},{"forward":{"qname":7}},{"forward":{"qname":"s3"}},{"nope":1}],[{"forward":{"qname":"next"}}]]}`,
			want:      []string{`s1 {"static_forwards":[[{"forward":{"qname":"next"}}]]}`, `s3 {"static_forwards":[[{"forward":{"qname":"next"}}]]}`},
			wantErr:   []string{"router: static_forwards[0][0]: must be a map, got a string", "router: static_forwards[0][2]: forward: qname must be a string, got a number", "router: static_forwards[0][4]: forward: must be a map, got null"},
			wantAfter: `{"static_forwards":[[{"forward":{"qname":"next"}}]]}`,
		},
		{
			name:      "a bad transform is reported, the message still goes",
			msg:       `{"static_forwards":[[{"forward":{"qname":"s1"},"transform":[1]},{"forward":{"qname":"s2"},"transform":{"x":" specials/(("}}]]}`,
			want:      []string{`s1 {}`, `s2 {}`},
			wantErr:   []string{"router: static_forwards[0][0]: transform must be a map, got a list", `router: static_forwards[0][1]: transform: key "x": special`},
			wantAfter: `{}`,
		},
		{
			name:      "a hop that is not a list is consumed and reported",
			msg:       `{"static_forwards":[{"forward":{"qname":"s1"}},[{"forward":{"qname":"s2"}}]]}`,
			wantErr:   []string{"router: static_forwards[0] must be a list of forwards, got a map"},
			wantAfter: `{"static_forwards":[[{"forward":{"qname":"s2"}}]]}`,
		},
		{
			name:      "an empty hop delivers nothing",
			msg:       `{"static_forwards":[[]]}`,
			wantAfter: `{}`,
		},
		{
			name: "static_forwards that is not a list: routes apply",
			msg:  `{"static_forwards":"s1"}`,
			want: []string{`routed {"static_forwards":"s1"}`}, wantAfter: `{"static_forwards":"s1"}`,
		},
	}
	for _, tt := range tests {
		for _, mode := range routeModes {
			t.Run(tt.name+"/"+mode.name, func(t *testing.T) {
				testStaticForward(t, r, tt, mode.route, mode.owned)
			})
		}
	}
}

// staticCase is one static_forwards message and what routing it gives.
type staticCase struct {
	name      string
	msg       string
	want      []string
	wantErr   []string // substrings; none means no error
	wantAfter string   // the message as Route left it (unless RouteOwned gave it away)
}

func testStaticForward(t *testing.T, r *router.Router, tt staticCase,
	route func(*router.Router, context.Context, message.Message, router.Forwarder) error, owned bool) {
	msg := mustMessage(t, tt.msg)
	var rec recorder
	err := route(r, t.Context(), msg, &rec)
	assertOwnership(t, owned, msg, rec.deliveries(), err == nil)
	given := false
	for _, d := range rec.deliveries() {
		given = given || message.Same(d.Msg, msg)
	}
	if len(tt.wantErr) == 0 && err != nil {
		t.Errorf("Route: got error %v, want none", err)
	}
	for _, w := range tt.wantErr {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Route error: got %v, want it to contain %q", err, w)
		}
	}
	if got := summary(t, rec.deliveries()); !reflect.DeepEqual(got, append([]string{}, tt.want...)) {
		t.Errorf("deliveries:\n got %q\nwant %q", got, tt.want)
	}
	if got := mustJSON(t, msg); !given && got != tt.wantAfter {
		t.Errorf("message after Route: got %s, want %s", got, tt.wantAfter)
	}
	assertNoAliasing(t, rec.deliveries())
}

// TestStaticItinerary follows a message hop by hop, as the queues would
// carry it, and checks the history it accumulates.
func TestStaticItinerary(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": routeAll("routed")})
	msg := mustMessage(t, `{"x":1,"static_forwards":[
		[{"forward":{"qname":"a"},"log_history":1}],
		[{"forward":{"qname":"b"},"log_history":1}],
		[{"forward":{"qname":"c"}}]]}`)
	var path []string
	for hop := range 4 {
		var rec recorder
		if err := r.Route(t.Context(), msg, &rec); err != nil {
			t.Fatalf("hop %d: Route: %v", hop, err)
		}
		ds := rec.deliveries()
		if len(ds) != 1 {
			t.Fatalf("hop %d: got %d deliveries, want 1", hop, len(ds))
		}
		path = append(path, ds[0].Forward.QName)
		msg = ds[0].Msg
	}
	if want := []string{"a", "b", "c", "routed"}; !reflect.DeepEqual(path, want) {
		t.Errorf("path: got %v, want %v", path, want)
	}
	want := `{".static_forwards_log":{"forward_history":[{"forward":{"qname":"a"},"log_history":1},{"forward":{"qname":"b"},"log_history":1}]},"x":1}`
	if got := mustJSON(t, msg); got != want {
		t.Errorf("final message: got %s, want %s", got, want)
	}
}

func TestStats(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{"kind": "a"}, "forwards": []any{map[string]any{"qname": "qa"}, map[string]any{"qname": "qa", "destination": "box2"}}},
		map[string]any{"match": map[string]any{"kind": "b"}, "forwards": []any{map[string]any{"qname": "qb"}}},
		map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "qa"}}},
	}})
	want := map[string]router.QueueStats{"qa": {}, "qa@box2": {}, "qb": {}}
	if got := r.Stats(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats before routing: got %v, want %v", got, want)
	}
	rec := &recorder{fail: map[string]error{"qb": errors.New("down")}}
	for _, m := range []string{`{"kind":"a"}`, `{"kind":"b"}`, `{"kind":"b"}`, `{"kind":"c"}`,
		`{"static_forwards":[[{"forward":{"qname":"qa"}},{"forward":{"qname":"qs","destination":"box3"}}]]}`} {
		_ = r.Route(t.Context(), mustMessage(t, m), rec)
	}
	want = map[string]router.QueueStats{
		"qa":      {Matched: 6, Forwarded: 6},
		"qa@box2": {Matched: 1, Forwarded: 1},
		"qb":      {Matched: 2, Failed: 2},
		"qs@box3": {Matched: 1, Forwarded: 1},
	}
	if got := r.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats: got %v, want %v", got, want)
	}
}

// TestConcurrentRouteAndStats routes from several goroutines while others
// read Stats; run with -race it checks the counters' safety, and the
// totals must add up.
func TestConcurrentRouteAndStats(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": routeAll("q")})
	const workers, perWorker = 4, 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
					s := r.Stats()["q"]
					if s.Forwarded > s.Matched {
						t.Errorf("Stats: forwarded %d > matched %d", s.Forwarded, s.Matched)
						return
					}
				}
			}
		}()
	}
	f := router.ForwarderFunc(func(context.Context, router.Forward, message.Message) error { return nil })
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				static := mustMessage(t, `{"static_forwards":[[{"forward":{"qname":"dyn"}}]]}`)
				if err := r.Route(t.Context(), message.Message{"w": int64(w), "i": int64(i)}, f); err != nil {
					t.Errorf("Route: %v", err)
				}
				if err := r.Route(t.Context(), static, f); err != nil {
					t.Errorf("Route static: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	want := map[string]router.QueueStats{
		"q":   {Matched: workers * perWorker, Forwarded: workers * perWorker},
		"dyn": {Matched: workers * perWorker, Forwarded: workers * perWorker},
	}
	if got := r.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats: got %v, want %v", got, want)
	}
}

func TestForwardString(t *testing.T) {
	tests := []struct {
		fwd  router.Forward
		want string
	}{
		{router.Forward{QName: "q"}, "q"},
		{router.Forward{QName: "q", Destination: "box2"}, "q@box2"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.fwd.String(); got != tt.want {
				t.Errorf("String: got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRouteOddMessages routes messages holding non-canonical Go values:
// nothing may panic, and copies still reach the forwarder.
func TestRouteOddMessages(t *testing.T) {
	r := mustCompile(t, map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{"a": "x"}, "forwards": []any{map[string]any{"qname": "hit"}}},
		map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": "all"}}},
	}})
	tests := []struct {
		name string
		msg  message.Message
		want []string
	}{
		{"[]string value", message.Message{"a": []string{"x"}}, []string{"all"}},
		{"int value", message.Message{"a": 1}, []string{"all"}},
		{"NaN value", message.Message{"a": math.NaN()}, []string{"all"}},
		{"static_forwards of Go type", message.Message{"static_forwards": [][]any{{}}}, []string{"all"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			if err := r.Route(t.Context(), tt.msg, &rec); err != nil {
				t.Fatalf("Route: %v", err)
			}
			if got := qnames(rec.deliveries()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("deliveries: got %v, want %v", got, tt.want)
			}
		})
	}
}
