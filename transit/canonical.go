package transit

import (
	"math"

	"github.com/multimodule/multimodule/message"
)

// normalize returns m checked and in canonical types, with send_ts set to
// ts (unix seconds), and whether its meta holds per-message overrides.
// Messages built from canonical types (the usual case: decoded
// or built by tasks with int64, float64, string, …) pass a cheap walk,
// which stamps them on the way; anything else goes through
// message.Normalize, which converts it or names the offending path. A
// message refused may have been stamped.
func normalize(m message.Message, ts float64) (_ message.Message, overrides bool, err error) {
	if m != nil {
		if overrides, ok := canonicalStamp(m, ts); ok {
			return m, overrides, nil
		}
	}
	n, err := message.Normalize(m)
	if err != nil {
		return nil, false, err
	}
	overrides = stamp(n, ts)
	return n, overrides, nil
}

// stamp sets m's send_ts to ts and reports whether its meta has
// overrides.
func stamp(m message.Message, ts float64) (overrides bool) {
	meta := m.EnsureMeta()
	meta["send_ts"] = ts
	if len(meta) > 1 {
		_, overrides = meta["overrides"]
	}
	return overrides
}

// canonicalStamp is canonicalMap for a whole message that also sets its
// send_ts to ts (the old value, replaced, is not checked; the map write
// is the lookup that tells whether meta holds anything else) and notes
// whether its meta has overrides, so that send need not look them up.
func canonicalStamp(m map[string]any, ts float64) (overrides, ok bool) {
	stamped := false
	for k, v := range m {
		if k == message.MetaKey {
			if meta, isMap := v.(map[string]any); isMap {
				meta["send_ts"] = ts
				stamped = true
				if len(meta) == 1 {
					continue // the usual meta: send_ts alone
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
	if !stamped {
		// No meta, or not a map (message.Message.EnsureMeta replaces it too).
		m[message.MetaKey] = map[string]any{"send_ts": ts}
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
