package message

import (
	"encoding/json"
	"unsafe"
)

// Equal reports whether two canonical values are the same JSON: maps and
// lists structurally, numbers by value (1 and 1.0 are equal; int64,
// float64 and json.Number alike), everything else by ==. A number never
// equals a string. Messages are compared as maps.
func Equal(a, b any) bool {
	if af, ok := numberValueOf(a); ok {
		bf, ok := numberValueOf(b)
		return ok && af == bf
	}
	switch at := a.(type) {
	case Message:
		return Equal(map[string]any(at), b)
	case map[string]any:
		if bm, ok := b.(Message); ok {
			b = map[string]any(bm)
		}
		bt, ok := b.(map[string]any)
		if !ok || len(at) != len(bt) {
			return false
		}
		for k, av := range at {
			bv, ok := bt[k]
			if !ok || !Equal(av, bv) {
				return false
			}
		}
		return true
	case []any:
		bt, ok := b.([]any)
		if !ok || len(at) != len(bt) {
			return false
		}
		for i := range at {
			if !Equal(at[i], bt[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

func numberValueOf(v any) (float64, bool) {
	switch v.(type) {
	case int64, float64, int, json.Number:
		return Float(v)
	}
	return 0, false
}

// Same reports whether a and b are the same map — one message, not two
// with equal contents: a change made through one shows through the other.
// Two nil messages are the same. A map value is a pointer to the
// runtime's map: comparing those needs neither reflection nor a walk
// (senders ask on every send).
func Same(a, b Message) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}
