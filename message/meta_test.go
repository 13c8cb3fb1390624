package message_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
)

func TestLocalityFor(t *testing.T) {
	withOverrides := func(ov map[string]any) message.Message {
		return message.Message{message.MetaKey: map[string]any{"overrides": ov}}
	}
	tests := []struct {
		name string
		m    message.Message
		want message.Locality
	}{
		{"no meta", message.Message{}, message.LocalityDefault},
		{"meta is not a map", message.Message{message.MetaKey: "x"}, message.LocalityDefault},
		{"no overrides", message.Message{message.MetaKey: map[string]any{"send_ts": 1.0}}, message.LocalityDefault},
		{"overrides not a map", withOverrides(nil), message.LocalityDefault},
		{"force_local for this queue", withOverrides(map[string]any{"force_local": map[string]any{"Q": true}}), message.LocalityLocal},
		{"force_local for another queue", withOverrides(map[string]any{"force_local": map[string]any{"Other": true}}), message.LocalityDefault},
		{"force_local false", withOverrides(map[string]any{"force_local": map[string]any{"Q": false}}), message.LocalityDefault},
		{"force_local with Perl truth 1", withOverrides(map[string]any{"force_local": map[string]any{"Q": int64(1)}}), message.LocalityLocal},
		{"force_local with Perl false \"0\"", withOverrides(map[string]any{"force_local": map[string]any{"Q": "0"}}), message.LocalityDefault},
		{"force_non_local", withOverrides(map[string]any{"force_non_local": map[string]any{"Q": true}}), message.LocalityNonLocal},
		{"force_local wins over force_non_local", withOverrides(map[string]any{
			"force_local": map[string]any{"Q": true}, "force_non_local": map[string]any{"Q": true}}), message.LocalityLocal},
		{"default_to local", withOverrides(map[string]any{"default_to": "local"}), message.LocalityLocal},
		{"default_to non-local", withOverrides(map[string]any{"default_to": "non-local"}), message.LocalityNonLocal},
		{"default_to non_local spelling", withOverrides(map[string]any{"default_to": "non_local"}), message.LocalityNonLocal},
		{"default_to unknown", withOverrides(map[string]any{"default_to": "elsewhere"}), message.LocalityDefault},
		{"force_non_local wins over default_to", withOverrides(map[string]any{
			"default_to": "local", "force_non_local": map[string]any{"Q": true}}), message.LocalityNonLocal},
		{"force_local wins over default_to", withOverrides(map[string]any{
			"default_to": "non-local", "force_local": map[string]any{"Q": true}}), message.LocalityLocal},
		{"other queue falls back to default_to", withOverrides(map[string]any{
			"default_to": "non-local", "force_local": map[string]any{"Other": true}}), message.LocalityNonLocal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.LocalityFor("Q"); got != tt.want {
				t.Errorf("LocalityFor(Q): got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSendTSRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ts   time.Time
	}{
		{"now", time.Now()},
		{"whole second", time.Unix(1_700_000_000, 0)},
		{"sub-second", time.Unix(1_700_000_000, 250_000_000)},
		{"epoch", time.Unix(0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message.Message{"a": "b"}
			m.SetSendTS(tt.ts)
			check := func(t *testing.T, m message.Message) {
				t.Helper()
				got, ok := m.SendTS()
				if !ok {
					t.Fatalf("SendTS: got none, want %v", tt.ts)
				}
				// A float64 of unix seconds keeps about 0.2µs at today's dates.
				if d := got.Sub(tt.ts).Abs(); d > time.Microsecond {
					t.Errorf("SendTS: got %v, want %v (off by %v)", got, tt.ts, d)
				}
			}
			check(t, m)

			b, err := message.Marshal(m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			back, err := message.Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			check(t, back)
		})
	}
	t.Run("missing", func(t *testing.T) {
		for _, m := range []message.Message{{}, {message.MetaKey: map[string]any{}}, {message.MetaKey: map[string]any{"send_ts": "soon"}}} {
			if got, ok := m.SendTS(); ok {
				t.Errorf("SendTS of %#v: got %v, want none", m, got)
			}
		}
	})
}

func TestMetaHelpers(t *testing.T) {
	t.Run("Meta without metadata is nil", func(t *testing.T) {
		if got := (message.Message{}).Meta(); got != nil {
			t.Errorf("got %#v, want nil", got)
		}
	})
	t.Run("EnsureMeta creates the map in the message", func(t *testing.T) {
		m := message.Message{}
		meta := m.EnsureMeta()
		meta["k"] = "v"
		if want := map[string]any{"k": "v"}; !reflect.DeepEqual(m.Meta(), want) {
			t.Errorf("Meta after EnsureMeta: got %#v, want %#v", m.Meta(), want)
		}
	})
	t.Run("EnsureMeta keeps an existing map", func(t *testing.T) {
		m := message.Message{message.MetaKey: map[string]any{"send_ts": 1.5}}
		if got := m.EnsureMeta()["send_ts"]; got != 1.5 {
			t.Errorf("got %#v, want 1.5", got)
		}
	})
	t.Run("EnsureMeta replaces a non-map", func(t *testing.T) {
		m := message.Message{message.MetaKey: "junk"}
		m.EnsureMeta()
		if _, ok := m[message.MetaKey].(map[string]any); !ok {
			t.Errorf("got %#v, want a map", m[message.MetaKey])
		}
	})
}
