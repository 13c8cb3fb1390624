package configfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		text    string
		want    map[string]any
		wantErr string
	}{
		{"bare yaml", "Example1:\n  outstr: howdy\n", map[string]any{"Example1": map[string]any{"outstr": "howdy"}}, ""},
		{"wrapped json", `{".multimodule":{"config":{"A":{"n":1}}}}`, map[string]any{"A": map[string]any{"n": int64(1)}}, ""},
		{"numbers exact", "A: {big: 9007199254740993, f: 1.5}", map[string]any{"A": map[string]any{"big": int64(9007199254740993), "f": 1.5}}, ""},
		{"numeric keys become strings", "Router:\n  routes:\n    10: {match: {}}\n", map[string]any{"Router": map[string]any{"routes": map[string]any{"10": map[string]any{"match": map[string]any{}}}}}, ""},
		{"empty file", "  \n", map[string]any{}, ""},
		{"syntax error has line", "A:\n  b: [1, 2\n", nil, "line"},
		{"top level list", "- a\n- b\n", nil, "top level must be a map"},
		{"task config not a map", "A: 3\n", nil, `task "A": config must be a map`},
		{"wrapped without config", `{".multimodule": {}}`, nil, "no config key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse("test.yaml", []byte(c.text))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, c.wantErr)
				}
				if !strings.Contains(err.Error(), "test.yaml") {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestSyntaxErrorIsErrSyntax(t *testing.T) {
	_, err := Parse("x.json", []byte(`{"A": {`))
	if !errors.Is(err, ErrSyntax) {
		t.Fatalf("got %v, want ErrSyntax", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"A: {b: 1}", `{"A":{"b":[1,2,{"c":null}]}}`, "- 1", "A: [", `{".multimodule":{"config":{}}}`, "? [a]\n: b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		for k, v := range cfg {
			if _, ok := v.(map[string]any); !ok {
				t.Fatalf("task %q config is %T, want a map", k, v)
			}
		}
	})
}
