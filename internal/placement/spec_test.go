package placement

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		name    string
		cfg     map[string]any
		want    Spec
		placed  bool
		wantErr string
	}{
		{name: "not placed", cfg: map[string]any{"x": 1}},
		{name: "host", cfg: map[string]any{"host": "box2"}, want: Spec{Kind: Pinned, Hosts: []string{"box2"}}, placed: true},
		{name: "hosts", cfg: map[string]any{"hosts": []any{"box1", "box2"}}, want: Spec{Kind: Preferred, Hosts: []string{"box1", "box2"}}, placed: true},
		{name: "hosts strings", cfg: map[string]any{"hosts": []string{"b.example.com"}}, want: Spec{Kind: Preferred, Hosts: []string{"b_example_com"}}, placed: true},
		{name: "any", cfg: map[string]any{"placement": map[string]any{"any": true}}, want: Spec{Kind: Any}, placed: true},
		{name: "host and hosts", cfg: map[string]any{"host": "a", "hosts": []any{"b"}}, wantErr: "task Counter: host and hosts both given: use one"},
		{name: "hosts and placement", cfg: map[string]any{"placement": map[string]any{"any": true}, "hosts": []any{"b"}}, wantErr: "task Counter: hosts and placement both given: use one"},
		{name: "all three", cfg: map[string]any{"host": "a", "hosts": []any{"b"}, "placement": map[string]any{"any": true}}, wantErr: "task Counter: host, hosts and placement all given: use one"},
		{name: "host not a string", cfg: map[string]any{"host": 3.0}, wantErr: "task Counter: host must be a box name, got number"},
		{name: "host list", cfg: map[string]any{"host": []any{"a"}}, wantErr: "task Counter: host must be a box name, got list"},
		{name: "host invalid", cfg: map[string]any{"host": "a b"}, wantErr: `task Counter: host: transit: invalid host name "a b": character ' ' at byte 1`},
		{name: "host empty", cfg: map[string]any{"host": ""}, wantErr: "task Counter: host: transit: invalid host name: empty"},
		{name: "host cluster scope", cfg: map[string]any{"host": "_cluster"}, wantErr: `task Counter: host: "_cluster" is reserved`},
		{name: "hosts string", cfg: map[string]any{"hosts": "box1"}, wantErr: "task Counter: hosts must be a list of box names, got string"},
		{name: "hosts object", cfg: map[string]any{"hosts": map[string]any{}}, wantErr: "task Counter: hosts must be a list of box names, got object"},
		{name: "hosts empty", cfg: map[string]any{"hosts": []any{}}, wantErr: "task Counter: hosts is empty: list at least one box"},
		{name: "hosts member", cfg: map[string]any{"hosts": []any{"a", true}}, wantErr: "task Counter: hosts[1] must be a box name, got boolean"},
		{name: "hosts invalid", cfg: map[string]any{"hosts": []any{"a", "b..c"}}, wantErr: `task Counter: hosts[1]: transit: invalid host name "b..c"`},
		{name: "hosts cluster scope", cfg: map[string]any{"hosts": []any{"_cluster"}}, wantErr: `task Counter: hosts[0]: "_cluster" is reserved`},
		{name: "hosts twice as scopes", cfg: map[string]any{"hosts": []any{"b_x", "b.x"}}, wantErr: "task Counter: hosts[1]: box b.x is listed twice"},
		{name: "hosts twice", cfg: map[string]any{"hosts": []any{"a", "b", "a"}}, wantErr: "task Counter: hosts[2]: box a is listed twice"},
		{name: "placement string", cfg: map[string]any{"placement": "any"}, wantErr: `task Counter: placement must be {"any": true}, got string`},
		{name: "placement false", cfg: map[string]any{"placement": map[string]any{"any": false}}, wantErr: "task Counter: placement: any must be true, got false (boolean)"},
		{name: "placement empty", cfg: map[string]any{"placement": map[string]any{}}, wantErr: "task Counter: placement: any must be true, got nothing"},
		{name: "placement unknown", cfg: map[string]any{"placement": map[string]any{"any": true, "zone": "x"}}, wantErr: `task Counter: placement: unknown key "zone"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, placed, err := ParseSpec("Counter", tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one starting %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if placed != tt.placed || got.Kind != tt.want.Kind || !slices.Equal(got.Hosts, tt.want.Hosts) {
				t.Errorf("got %+v placed %v, want %+v placed %v", got, placed, tt.want, tt.placed)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	pinned := Spec{Kind: Pinned, Hosts: []string{"b2"}}
	pref := Spec{Kind: Preferred, Hosts: []string{"b1", "b2"}}
	any := Spec{Kind: Any}
	tests := []struct {
		name string
		s    Spec
		live []string
		want string
		ok   bool
	}{
		{"pinned live", pinned, []string{"b1", "b2", "b3"}, "b2", true},
		{"pinned dead", pinned, []string{"b1", "b3"}, "", false},
		{"preferred first", pref, []string{"b3", "b2", "b1"}, "b1", true},
		{"preferred second", pref, []string{"b3", "b2"}, "b2", true},
		{"preferred none", pref, []string{"b3"}, "", false},
		{"any none", any, nil, "", false},
		{"any one", any, []string{"b3"}, "b3", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.s.Choose("Counter", tt.live)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %q %v, want %q %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestChooseAnyRendezvous: every box computes the same choice whatever
// the order of the live list, the tasks spread over the boxes, and when
// a box leaves only its own tasks move.
func TestChooseAnyRendezvous(t *testing.T) {
	s := Spec{Kind: Any}
	three := []string{"b1", "b2", "b3"}
	count := map[string]int{}
	moved := 0
	const n = 3000
	for i := range n {
		task := fmt.Sprintf("Task%d", i)
		a, _ := s.Choose(task, three)
		b, _ := s.Choose(task, []string{"b3", "b1", "b2"})
		if a != b {
			t.Fatalf("%s: %s with one order, %s with another", task, a, b)
		}
		count[a]++
		c, _ := s.Choose(task, []string{"b1", "b3"})
		if a != "b2" && c != a {
			moved++
		}
		if a == "b2" && c == "b2" {
			t.Fatalf("%s: chosen b2, which is not live", task)
		}
	}
	if moved != 0 {
		t.Errorf("%d tasks not on the leaving box moved, want 0", moved)
	}
	for _, box := range three {
		if count[box] < n/3-n/10 || count[box] > n/3+n/10 {
			t.Errorf("box %s got %d of %d tasks, want about a third (%v)", box, count[box], n, count)
		}
	}
}
