package transit

import (
	"math"

	"github.com/multimodule/multimodule/message"
)

// normalize returns m checked and in canonical types, and whether its
// meta holds per-message overrides (SPEC 6). Messages built from
// canonical types (the usual case: decoded or built by tasks with int64,
// float64, string, …) pass a cheap walk; anything else goes through
// message.Normalize, which converts it or names the offending path.
func normalize(m message.Message) (_ message.Message, overrides bool, err error) {
	if m != nil {
		if overrides, ok := canonicalMessage(m); ok {
			return m, overrides, nil
		}
	}
	n, err := message.Normalize(m)
	if err != nil {
		return nil, false, err
	}
	_, overrides = n.Meta()["overrides"]
	return n, overrides, nil
}

// canonicalMessage is canonicalMap for a whole message, noting on the way
// whether its meta has overrides (so that send need not look them up).
func canonicalMessage(m map[string]any) (overrides, ok bool) {
	for k, v := range m {
		if k == message.MetaKey {
			if meta, isMap := v.(map[string]any); isMap {
				if ts, ok := meta["send_ts"]; ok && len(meta) == 1 {
					// The usual meta: a lookup costs less than a walk.
					if !canonicalValue(ts, 2) {
						return false, false
					}
					continue
				}
				for mk, mv := range meta {
					if mk == "overrides" {
						overrides = true
					}
					if !canonicalValue(mv, 2) {
						return false, false
					}
				}
				continue
			}
		}
		if !canonicalValue(v, 1) {
			return false, false
		}
	}
	return overrides, true
}

// canonicalDepth stays under message's nesting limit, so that deeper
// messages get Normalize's verdict.
const canonicalDepth = 256

func canonicalMap(m map[string]any, depth int) bool {
	if depth > canonicalDepth {
		return false
	}
	for _, v := range m {
		if !canonicalValue(v, depth+1) {
			return false
		}
	}
	return true
}

func canonicalValue(v any, depth int) bool {
	switch t := v.(type) {
	case nil, bool, string, int64:
		return true
	case float64:
		return !math.IsNaN(t) && !math.IsInf(t, 0)
	case map[string]any:
		return canonicalMap(t, depth)
	case []any:
		if depth > canonicalDepth {
			return false
		}
		for _, e := range t {
			if !canonicalValue(e, depth+1) {
				return false
			}
		}
		return true
	}
	return false // json.Number, int, Message, …: let Normalize convert or refuse
}
