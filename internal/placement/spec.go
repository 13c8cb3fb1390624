package placement

import (
	"fmt"
	"slices"
	"strings"

	"github.com/multimodule/multimodule/transit"
)

// Kind is how a placed task chooses its box.
type Kind int

const (
	// Pinned: `host: box2`: only that box runs the task; while it is
	// not live, nobody does.
	Pinned Kind = iota + 1
	// Preferred: `hosts: [box1, box2]`: the first live box of the list.
	Preferred
	// Any: `placement: {any: true}`: any live box, chosen by rendezvous
	// hashing of the task and box names.
	Any
)

// Spec is where a placed task runs, as its config says.
type Spec struct {
	Kind  Kind
	Hosts []string // Pinned: the one box; Preferred: the boxes in order; Any: nil (box names, as boxName gives them)
}

// ParseSpec reads the placement keys of task name's config cfg: exactly
// one of `host` (a box name), `hosts` (a non-empty list of box names, in
// order of preference) or `placement` (`{"any": true}`). placed is false
// when cfg has none of them: the task runs on the box whose config lists
// it, as without a cluster. The error names the task and the key.
func ParseSpec(name string, cfg map[string]any) (s Spec, placed bool, err error) {
	var given []string
	for _, k := range []string{"host", "hosts", "placement"} {
		if _, ok := cfg[k]; ok {
			given = append(given, k)
		}
	}
	switch len(given) {
	case 0:
		return Spec{}, false, nil
	case 1:
	case 2:
		return Spec{}, false, fmt.Errorf("task %s: %s and %s both given: use one", name, given[0], given[1])
	default:
		return Spec{}, false, fmt.Errorf("task %s: host, hosts and placement all given: use one", name)
	}
	switch given[0] {
	case "host":
		box, ok := cfg["host"].(string)
		if !ok {
			return Spec{}, false, fmt.Errorf("task %s: host must be a box name, got %s", name, typeName(cfg["host"]))
		}
		if err := checkBox(box); err != nil {
			return Spec{}, false, fmt.Errorf("task %s: host: %w", name, err)
		}
		return Spec{Kind: Pinned, Hosts: []string{boxName(box)}}, true, nil
	case "hosts":
		var list []string
		switch v := cfg["hosts"].(type) {
		case []string:
			list = slices.Clone(v)
		case []any:
			for i, e := range v {
				box, ok := e.(string)
				if !ok {
					return Spec{}, false, fmt.Errorf("task %s: hosts[%d] must be a box name, got %s", name, i, typeName(e))
				}
				list = append(list, box)
			}
		default:
			return Spec{}, false, fmt.Errorf("task %s: hosts must be a list of box names, got %s", name, typeName(v))
		}
		if len(list) == 0 {
			return Spec{}, false, fmt.Errorf("task %s: hosts is empty: list at least one box", name)
		}
		for i, box := range list {
			if err := checkBox(box); err != nil {
				return Spec{}, false, fmt.Errorf("task %s: hosts[%d]: %w", name, i, err)
			}
			list[i] = boxName(box)
			if slices.Contains(list[:i], list[i]) {
				return Spec{}, false, fmt.Errorf("task %s: hosts[%d]: box %s is listed twice", name, i, box)
			}
		}
		return Spec{Kind: Preferred, Hosts: list}, true, nil
	default:
		p, ok := cfg["placement"].(map[string]any)
		if !ok {
			return Spec{}, false, fmt.Errorf(`task %s: placement must be {"any": true}, got %s`, name, typeName(cfg["placement"]))
		}
		for k := range p {
			if k != "any" {
				return Spec{}, false, fmt.Errorf(`task %s: placement: unknown key %q (the only one is "any")`, name, k)
			}
		}
		if yes, _ := p["any"].(bool); !yes {
			return Spec{}, false, fmt.Errorf(`task %s: placement: any must be true, got %s (leave placement out to run the task where its config is)`, name, valueText(p["any"]))
		}
		return Spec{Kind: Any}, true, nil
	}
}

// checkBox refuses what cannot be a box name.
func checkBox(box string) error {
	if box == ClusterScope {
		return fmt.Errorf("%q is reserved for the queues of placed tasks, not a box name", ClusterScope)
	}
	return transit.ValidateHost(box)
}

// boxName is a valid box name as the cluster knows it: its host scope
// on the bus, where a '.' becomes '_' ("box2.example.com" is box
// box2_example_com), as the box's queues are.
func boxName(box string) string { return strings.ReplaceAll(box, ".", "_") }

// typeName names the JSON type of a config value, for errors.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64, float32, int, int64, int32, uint64, uint32, uint:
		return "number"
	case []any, []string:
		return "list"
	case map[string]any:
		return "object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func valueText(v any) string {
	if v == nil {
		return "nothing"
	}
	return fmt.Sprintf("%v (%s)", v, typeName(v))
}

// Choose is the box that should run task among the live boxes, and
// false when none of them may. Every box computes the same answer from
// the same live set: Any uses rendezvous (highest random weight)
// hashing, so that when a box joins or leaves only the tasks that go to
// or come from it move.
func (s Spec) Choose(task string, live []string) (box string, ok bool) {
	switch s.Kind {
	case Pinned, Preferred:
		for _, h := range s.Hosts {
			if slices.Contains(live, h) {
				return h, true
			}
		}
		return "", false
	case Any:
		return rendezvous(task, live)
	}
	return "", false
}

// rendezvous is the live box with the highest weight for task (ties,
// which need a 64-bit collision, go to the smaller name).
func rendezvous(task string, live []string) (string, bool) {
	var (
		best  string
		bestW uint64
		found bool
	)
	for _, box := range live {
		w := weight(task, box)
		if !found || w > bestW || w == bestW && box < best {
			best, bestW, found = box, w, true
		}
	}
	return best, found
}

// weight is a 64-bit hash of (task, box): FNV-1a over both names with a
// separator, then the splitmix64 finaliser to spread the bits.
func weight(task, box string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(task); i++ {
		h = (h ^ uint64(task[i])) * prime
	}
	h *= prime // a 0 byte between the names: ("ab", "c") is not ("a", "bc")
	for i := 0; i < len(box); i++ {
		h = (h ^ uint64(box[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
