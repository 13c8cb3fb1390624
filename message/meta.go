package message

import "time"

// MetaKey is the framework-owned key under which the transport keeps a
// message's metadata (`send_ts`, `overrides`, …).
const MetaKey = ".ipc_transit_meta"

// Meta returns the message's `.ipc_transit_meta` map, or nil if it has
// none (or it is not a map).
func (m Message) Meta() map[string]any {
	meta, _ := m[MetaKey].(map[string]any)
	return meta
}

// EnsureMeta returns the message's `.ipc_transit_meta` map, creating it
// (and replacing a non-map value) when needed.
func (m Message) EnsureMeta() map[string]any {
	if meta, ok := m[MetaKey].(map[string]any); ok {
		return meta
	}
	meta := map[string]any{}
	m[MetaKey] = meta
	return meta
}

// SetSendTS records the send time in the metadata as unix seconds (a
// float with sub-second precision).
func (m Message) SetSendTS(t time.Time) {
	m.EnsureMeta()["send_ts"] = float64(t.UnixNano()) / 1e9
}

// SendTS returns the recorded send time, if any.
func (m Message) SendTS() (time.Time, bool) {
	f, ok := Float(m.Meta()["send_ts"])
	if !ok {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}

// Locality is a per-message delivery override.
type Locality int

// The values of Locality.
const (
	LocalityDefault  Locality = iota // no override: the transport decides
	LocalityLocal                    // deliver in memory if the queue is hosted here
	LocalityNonLocal                 // always go through the shared transport
)

// LocalityFor reads `.ipc_transit_meta.overrides` for queue qname:
// `force_local` / `force_non_local` (maps of qname → true) win over
// `default_to` (`local` or `non-local`).
func (m Message) LocalityFor(qname string) Locality {
	ov, _ := m.Meta()["overrides"].(map[string]any)
	if ov == nil {
		return LocalityDefault
	}
	if fl, ok := ov["force_local"].(map[string]any); ok && truthy(fl[qname]) {
		return LocalityLocal
	}
	if fn, ok := ov["force_non_local"].(map[string]any); ok && truthy(fn[qname]) {
		return LocalityNonLocal
	}
	switch ov["default_to"] {
	case "local":
		return LocalityLocal
	case "non-local", "non_local", "nonlocal":
		return LocalityNonLocal
	}
	return LocalityDefault
}

// Truthy reports Perl truth: not null, false, "", "0" or 0.
func Truthy(v any) bool { return truthy(v) }

func truthy(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case string:
		return t != "" && t != "0"
	case int64:
		return t != 0
	case int:
		return t != 0
	case float64:
		return t != 0
	}
	return true
}
