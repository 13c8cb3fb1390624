// Package message defines the Message that MultiModule tasks receive and
// emit: a JSON-compatible map with string keys.
//
// Values inside a Message are always one of the canonical types:
//
//	nil, bool, string, int64, float64, json.Number (integers beyond int64),
//	[]any, map[string]any
//
// Decoding (Unmarshal) produces only these types; integers decode as int64
// and round-trip exactly. Normalize converts the other Go types a task
// author naturally writes (int, uint32, float32, []string, Message, …) to the
// canonical ones and rejects anything that is not JSON-compatible with an
// error naming the offending path.
//
// Keys starting with "." are owned by the framework; the transport keeps its
// metadata under MetaKey (".ipc_transit_meta").
package message

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Message is one JSON-compatible map: the unit that queues carry and tasks
// handle.
type Message map[string]any

// ErrNotJSON is wrapped by every error about a value that cannot be
// represented in JSON.
var ErrNotJSON = errors.New("message: not JSON-compatible")

// maxDepth bounds how deeply nested a message may be; deeper input is
// rejected instead of exhausting the stack.
const maxDepth = 512

// Copy returns a deep copy of m: maps and lists are copied, scalars shared
// (they are immutable). A nil Message copies to nil.
func (m Message) Copy() Message {
	if m == nil {
		return nil
	}
	return Message(copyMap(m))
}

// CopyValue returns a deep copy of a canonical value. A nil map or list
// inside it copies to an empty one; a Message inside it copies to a
// map[string]any.
func CopyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return copyMap(t)
	case Message:
		return copyMap(t)
	case []any:
		return copyList(t)
	default:
		return v
	}
}

// copyMap copies m in two steps: maps.Clone copies the map's memory as it
// is (for a map of up to 8 keys one group, no hashing), then the values
// that are containers — usually few: the transport's metadata — are
// replaced by their own copies. That is 10–20 % less CPU than inserting
// every key into a new map (thread CPU per copy: the bench message
// 220–246 → 206–218 ns, a decoded 12-key message ~710 → ~570 ns), and
// copies are the Router's main cost per forward. (A map that once held
// many more keys than it does now keeps that capacity in its copy.)
//
// A map of exactly 8 keys that holds containers is rebuilt key by key
// instead: the runtime (Go 1.26, internal/runtime/maps) grows a full
// 8-slot map to a table on any assignment, even to a key it holds, so
// fixing up its containers would cost more than the clone saved
// (BenchmarkCopy8Keys).
func copyMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	if len(m) == fullSmallMap && hasContainers(m) {
		return rebuildMap(m)
	}
	out := maps.Clone(m)
	for k, v := range m {
		switch t := v.(type) {
		case map[string]any:
			out[k] = copyMap(t)
		case Message:
			out[k] = copyMap(t)
		case []any:
			out[k] = copyList(t)
		}
	}
	return out
}

// fullSmallMap is the number of keys that fills a small map (one group of
// 8 slots) in Go's map implementation.
const fullSmallMap = 8

// hasContainers reports whether a value of m is a map or a list.
func hasContainers(m map[string]any) bool {
	for _, v := range m {
		switch v.(type) {
		case map[string]any, Message, []any:
			return true
		}
	}
	return false
}

// rebuildMap copies m into a new map, key by key.
func rebuildMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch t := v.(type) {
		case map[string]any:
			out[k] = copyMap(t)
		case Message:
			out[k] = copyMap(t)
		case []any:
			out[k] = copyList(t)
		default:
			out[k] = v
		}
	}
	return out
}

// copyList copies l into a new backing array (never shared, even when
// empty) and replaces its containers by their own copies.
func copyList(l []any) []any {
	out := make([]any, len(l))
	copy(out, l)
	for i, v := range l {
		switch t := v.(type) {
		case map[string]any:
			out[i] = copyMap(t)
		case Message:
			out[i] = copyMap(t)
		case []any:
			out[i] = copyList(t)
		}
	}
	return out
}

// Normalize checks that v is JSON-compatible and returns it as a Message
// made only of canonical types. It accepts a Message, a map[string]any or
// any map with string keys. The input is not modified; containers that
// needed conversion are rebuilt. The error names the path of the first bad
// value, e.g. `message: not JSON-compatible: at "a.b[2]": chan int`.
func Normalize(v any) (Message, error) {
	switch t := v.(type) {
	case Message:
		if t == nil {
			return nil, fmt.Errorf("%w: a message must be a map, got nil", ErrNotJSON)
		}
		n, err := normalizeValue(map[string]any(t), "", 0)
		if err != nil {
			return nil, err
		}
		return Message(n.(map[string]any)), nil
	case nil:
		return nil, fmt.Errorf("%w: a message must be a map, got null", ErrNotJSON)
	}
	n, err := normalizeValue(v, "", 0)
	if err != nil {
		return nil, err
	}
	m, ok := n.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: a message must be a map at the top level, got %s", ErrNotJSON, describe(v))
	}
	return Message(m), nil
}

// NormalizeValue is Normalize for any value (not only maps).
func NormalizeValue(v any) (any, error) { return normalizeValue(v, "", 0) }

// Describe names the JSON kind of a value for error messages: "null",
// "a string", "a bool", "a list", "a map", "a number", or its Go type.
func Describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a bool"
	case []any:
		return "a list"
	case map[string]any, Message:
		return "a map"
	case float64, int64, int, json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

func describe(v any) string { return Describe(v) }

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathErr(path string, format string, args ...any) error {
	if path == "" {
		path = "(top)"
	}
	return fmt.Errorf("%w: at %q: %s", ErrNotJSON, path, fmt.Sprintf(format, args...))
}

func normalizeValue(v any, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, pathErr(path, "nested deeper than %d levels", maxDepth)
	}
	switch t := v.(type) {
	case nil, bool, string, int64:
		return v, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, pathErr(path, "%v is not a JSON number", t)
		}
		return v, nil
	case json.Number:
		return numberValue(string(t), path)
	case int:
		return int64(t), nil
	case int8:
		return int64(t), nil
	case int16:
		return int64(t), nil
	case int32:
		return int64(t), nil
	case uint8:
		return int64(t), nil
	case uint16:
		return int64(t), nil
	case uint32:
		return int64(t), nil
	case uint:
		return uintValue(uint64(t)), nil
	case uint64:
		return uintValue(t), nil
	case float32:
		return normalizeValue(float64(t), path, depth)
	case Message:
		return normalizeMap(t, path, depth)
	case map[string]any:
		return normalizeMap(t, path, depth)
	case []any:
		var out []any
		for i, e := range t {
			n, err := normalizeValue(e, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			if out == nil && !sameValue(n, e) {
				out = make([]any, len(t))
				copy(out, t[:i])
			}
			if out != nil {
				out[i] = n
			}
		}
		if out == nil {
			return t, nil
		}
		return out, nil
	}
	// Slower reflective path for other slices and string-keyed maps.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}, nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			n, err := normalizeValue(rv.Index(i).Interface(), fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, pathErr(path, "map keys must be strings, got %s", rv.Type().Key())
		}
		out := make(map[string]any, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			k := iter.Key().String()
			n, err := normalizeValue(iter.Value().Interface(), joinPath(path, k), depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	}
	return nil, pathErr(path, "%T is not JSON-compatible", v)
}

// sameValue reports whether normalization left e unchanged (so the
// original container can be reused). Only identity of containers and
// equality of scalars of the same type count.
func sameValue(n, e any) bool {
	switch nt := n.(type) {
	case map[string]any:
		et, ok := e.(map[string]any)
		return ok && reflect.ValueOf(nt).UnsafePointer() == reflect.ValueOf(et).UnsafePointer()
	case []any:
		et, ok := e.([]any)
		return ok && len(nt) == len(et) && (len(nt) == 0 || &nt[0] == &et[0])
	}
	if reflect.TypeOf(n) != reflect.TypeOf(e) {
		return false
	}
	return n == e
}

func normalizeMap(m map[string]any, path string, depth int) (any, error) {
	var out map[string]any
	for k, e := range m {
		n, err := normalizeValue(e, joinPath(path, k), depth+1)
		if err != nil {
			return nil, err
		}
		if out == nil && !sameValue(n, e) {
			out = make(map[string]any, len(m))
			for k2, e2 := range m {
				out[k2] = e2
			}
		}
		if out != nil {
			out[k] = n
		}
	}
	if out == nil {
		return map[string]any(m), nil
	}
	return out, nil
}

func uintValue(u uint64) any {
	if u <= math.MaxInt64 {
		return int64(u)
	}
	return json.Number(strconv.FormatUint(u, 10))
}

// numberValue converts JSON number text to int64 when it is an integer
// that fits, to json.Number for larger integers (kept exact), and to
// float64 otherwise.
func numberValue(s, path string) (any, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return nil, pathErr(path, "%q is not a number", s)
		}
		return json.Number(s), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, pathErr(path, "%q is not a number", s)
	}
	return f, nil
}
