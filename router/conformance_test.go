package router_test

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

// routerFile is testdata/router.json, a byte-identical copy of the
// project's shared conformance file.
type routerFile struct {
	Cases      []routeCase `json:"cases"`
	BadConfigs []struct {
		Name   string          `json:"name"`
		Config json.RawMessage `json:"config"`
	} `json:"bad_configs"`
	GoCases []routeCase `json:"go_cases"`
}

type routeCase struct {
	Name    string          `json:"name"`
	Config  json.RawMessage `json:"config"`
	Message json.RawMessage `json:"message"`
	Expect  []struct {
		QName       string          `json:"qname"`
		Destination string          `json:"destination"`
		Message     json.RawMessage `json:"message"`
	} `json:"expect"`
}

func loadRouterFile(t *testing.T) routerFile {
	t.Helper()
	data, err := os.ReadFile("testdata/router.json")
	if err != nil {
		t.Fatalf("read conformance file: %v", err)
	}
	var f routerFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("parse testdata/router.json: %v", err)
	}
	if len(f.Cases) == 0 || len(f.BadConfigs) == 0 || len(f.GoCases) == 0 {
		t.Fatalf("testdata/router.json: got %d cases, %d bad configs, %d go cases; want some of each",
			len(f.Cases), len(f.BadConfigs), len(f.GoCases))
	}
	return f
}

func TestConformanceCases(t *testing.T) {
	f := loadRouterFile(t)
	for _, group := range []struct {
		name  string
		cases []routeCase
	}{{"cases", f.Cases}, {"go_cases", f.GoCases}} {
		for _, c := range group.cases {
			for _, mode := range routeModes {
				t.Run(group.name+"/"+c.Name+"/"+mode.name, func(t *testing.T) {
					r := mustCompile(t, mustMessage(t, string(c.Config)))
					var rec recorder
					msg := mustMessage(t, string(c.Message))
					if err := mode.route(r, t.Context(), msg, &rec); err != nil {
						t.Fatalf("%s: %v", mode.name, err)
					}
					got := summary(t, rec.deliveries())
					want := make([]string, len(c.Expect))
					for i, e := range c.Expect {
						fwd := router.Forward{QName: e.QName, Destination: e.Destination}
						want[i] = fwd.String() + " " + mustJSON(t, mustMessage(t, string(e.Message)))
					}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("deliveries:\n got %q\nwant %q", got, want)
					}
					assertOwnership(t, mode.owned, msg, rec.deliveries(), true)
					assertNoAliasing(t, rec.deliveries())
				})
			}
		}
	}
}

// routeModes are Route and RouteOwned, which must deliver the same.
var routeModes = []struct {
	name  string
	owned bool
	route func(r *router.Router, ctx context.Context, msg message.Message, f router.Forwarder) error
}{
	{"Route", false, (*router.Router).Route},
	{"RouteOwned", true, (*router.Router).RouteOwned},
}

// assertOwnership checks which delivery got the routed message itself:
// none with Route; with RouteOwned only the last one, and only when
// routing succeeded (ok) — after an error the caller still has msg.
func assertOwnership(t *testing.T, owned bool, msg message.Message, ds []delivery, ok bool) {
	t.Helper()
	for i, d := range ds {
		if !message.Same(d.Msg, msg) {
			continue
		}
		switch {
		case !owned:
			t.Errorf("Route: delivery %d is the routed message itself, want a copy", i)
		case !ok:
			t.Errorf("RouteOwned failed but delivery %d is the routed message itself, want a copy", i)
		case i != len(ds)-1:
			t.Errorf("RouteOwned: delivery %d of %d is the routed message itself, want only the last", i, len(ds))
		}
	}
}

// assertNoAliasing changes every container in each delivered message and
// checks that no other delivery changed with it.
func assertNoAliasing(t *testing.T, ds []delivery) {
	t.Helper()
	before := summary(t, ds)
	for i := range ds {
		scribble(ds[i].Msg)
		after := summary(t, ds)
		for j := range ds {
			if j != i && after[j] != before[j] {
				t.Errorf("changing delivery %d changed delivery %d: got %s, want %s", i, j, after[j], before[j])
			}
		}
		before = after
	}
}

// scribble writes a marker into every map and list element of v.
func scribble(v any) {
	switch t := v.(type) {
	case message.Message:
		scribble(map[string]any(t))
	case map[string]any:
		for _, e := range t {
			scribble(e)
		}
		t["scribbled"] = true
	case []any:
		for i, e := range t {
			switch e.(type) {
			case map[string]any, []any:
				scribble(e)
			default:
				t[i] = "scribbled"
			}
		}
	}
}

// wantBadConfig is what the error must say for each of the conformance
// file's bad configs (any case not listed only has to be rejected).
var wantBadConfig = map[string]string{
	"no routes key":          "router: config has no routes",
	"routes is a string":     "router: routes must be a list or a map with numeric keys, got a string",
	"route is not a map":     "router: route 0: must be a map, got a string",
	"route without match":    "router: route 0: match: missing",
	"match is not a map":     "router: route 0: match must be a map, got a string",
	"transform is not a map": "router: route 0: transform must be a map, got a list",
	"forwards is not a list": "router: route 0: forwards must be a list, got a map",
	"forward is not a map":   "router: route 0: forwards[0]: must be a map, got a string",
	"forward without qname":  "router: route 0: forwards[0]: qname: missing",
}

func TestConformanceBadConfigs(t *testing.T) {
	for _, c := range loadRouterFile(t).BadConfigs {
		t.Run(c.Name, func(t *testing.T) {
			r, err := router.Compile(mustMessage(t, string(c.Config)))
			if err == nil {
				t.Fatalf("Compile(%s): got a router with %v, want an error", c.Config, r.Stats())
			}
			if want, ok := wantBadConfig[c.Name]; ok && !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error: got %q, want it to start with %q", err, want)
			}
		})
	}
}
