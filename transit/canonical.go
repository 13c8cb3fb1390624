package transit

import (
	"math"

	"github.com/multimodule/multimodule/message"
)

// normalize returns m checked and in canonical types. Messages built from
// canonical types (the usual case: decoded or built by tasks with int64,
// float64, string, …) pass a cheap walk; anything else goes through
// message.Normalize, which converts it or names the offending path.
func normalize(m message.Message) (message.Message, error) {
	if m != nil && canonicalMap(m, 0) {
		return m, nil
	}
	return message.Normalize(m)
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
