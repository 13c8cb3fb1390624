package oob_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"strings"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/multimodule/multimodule/oob"
)

func TestSlogBridge(t *testing.T) {
	tests := []struct {
		name  string
		debug int
		log   func(l *slog.Logger)
		want  []oob.Record // Time and PID are not compared
	}{
		{"info is log", 0, func(l *slog.Logger) { l.Info("hello", "n", 1) },
			[]oob.Record{{Channel: "log", Text: "hello", Details: map[string]any{"n": int64(1)}}}},
		{"warn is log with its level", 0, func(l *slog.Logger) { l.Warn("careful") },
			[]oob.Record{{Channel: "log", Text: "careful", Details: map[string]any{"level": "WARN"}}}},
		{"error is error", 0, func(l *slog.Logger) { l.Error("broke", "err", errors.New("disk")) },
			[]oob.Record{{Channel: "error", Text: "broke", Details: map[string]any{"err": "disk"}}}},
		{"above error keeps its level", 0, func(l *slog.Logger) { l.Log(context.Background(), slog.LevelError+4, "worse") },
			[]oob.Record{{Channel: "error", Text: "worse", Details: map[string]any{"level": "ERROR+4"}}}},
		{"debug dropped at -d 0", 0, func(l *slog.Logger) { l.Debug("hidden") }, nil},
		{"debug at -d 1", 1, func(l *slog.Logger) { l.Debug("shown") },
			[]oob.Record{{Channel: "debug", Text: "shown"}}},
		{"debug-1 needs -d 2", 1, func(l *slog.Logger) { l.Log(context.Background(), slog.LevelDebug-1, "verbose") }, nil},
		{"debug-1 at -d 2", 2, func(l *slog.Logger) { l.Log(context.Background(), slog.LevelDebug-1, "verbose") },
			[]oob.Record{{Channel: "debug", Text: "verbose", Details: map[string]any{"level": "DEBUG-1"}}}},
		{"channel attr overrides", 0, func(l *slog.Logger) { l.Warn("cpu high", "channel", "alert", "value", 1.9) },
			[]oob.Record{{Channel: "alert", Text: "cpu high", Details: map[string]any{"level": "WARN", "value": 1.9}}}},
		{"task attr sets the task", 0, func(l *slog.Logger) { l.Info("loaded", "task", "Foo") },
			[]oob.Record{{Channel: "log", Text: "loaded", Task: "Foo"}}},
		{"With task and channel", 0, func(l *slog.Logger) { l.With("task", "Bar", "channel", "audit").Info("x") },
			[]oob.Record{{Channel: "audit", Text: "x", Task: "Bar"}}},
		{"task inside a group is a detail", 0, func(l *slog.Logger) { l.WithGroup("g").Info("x", "task", "T") },
			[]oob.Record{{Channel: "log", Text: "x", Details: map[string]any{"g": map[string]any{"task": "T"}}}}},
		{"non-string channel is a detail", 0, func(l *slog.Logger) { l.Info("x", "channel", 3) },
			[]oob.Record{{Channel: "log", Text: "x", Details: map[string]any{"channel": int64(3)}}}},
		{"values made JSON-compatible", 0, func(l *slog.Logger) {
			l.Info("x", "d", 1500*time.Millisecond, "u", uint64(7), "t", when, "m", map[string]int{"a": 1})
		}, []oob.Record{{Channel: "log", Text: "x", Details: map[string]any{
			"d": "1.5s", "u": int64(7), "t": "2026-11-26T20:27:36.123456789Z", "m": map[string]any{"a": int64(1)}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, oob.Handling{"log": "Q", "error": "Q", "alert": "Q", "debug": "Q", "audit": "Q"}, oob.Options{DebugLevel: tt.debug})
			tt.log(slog.New(oob.NewSlogHandler(r.d)))
			r.rec.mu.Lock()
			var got []oob.Record
			for _, s := range r.rec.got {
				rec, err := oob.RecordFromMessage(s.m)
				if err != nil {
					t.Fatal(err)
				}
				rec.Time, rec.PID = time.Time{}, 0
				got = append(got, rec)
			}
			r.rec.mu.Unlock()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSlogEnabled(t *testing.T) {
	tests := []struct {
		debug int
		level slog.Level
		want  bool
	}{
		{0, slog.LevelDebug, false},
		{0, slog.LevelInfo, true},
		{0, slog.LevelWarn, true},
		{0, slog.LevelError, true},
		{1, slog.LevelDebug, true},
		{1, slog.LevelDebug - 1, false},
		{2, slog.LevelDebug - 1, true},
		{1, slog.LevelDebug + 2, true},
	}
	for _, tt := range tests {
		name := tt.level.String() + " at -d " + string(rune('0'+tt.debug))
		t.Run(name, func(t *testing.T) {
			d := oob.New(oob.Options{DebugLevel: tt.debug})
			t.Cleanup(func() { d.Close() })
			if got := oob.NewSlogHandler(d).Enabled(t.Context(), tt.level); got != tt.want {
				t.Errorf("Enabled: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewSlogHandlerAttrs(t *testing.T) {
	r := newRig(t, oob.Handling{"alert": "1"}, oob.Options{})
	h := oob.NewSlogHandler(r.d, slog.String("task", "MultiModule"), slog.String("channel", "alert"), slog.Int("k", 1))
	slog.New(h).Info("threshold")
	recs := r.stdout.records(t)
	if len(recs) != 1 {
		t.Fatalf("records: got %d, want 1", len(recs))
	}
	got := recs[0]
	if got.Channel != "alert" || got.Task != "MultiModule" || got.Details["k"] != int64(1) {
		t.Errorf("got %+v, want channel alert, task MultiModule, details k=1", got)
	}
}

// TestSlogConformance runs the standard library's handler conformance
// suite. Records read back as {time, level, msg, details…}: level is the
// kept level, or the channel's own.
func TestSlogConformance(t *testing.T) {
	var out *lockedBuffer
	slogtest.Run(t, func(t *testing.T) slog.Handler {
		out = &lockedBuffer{}
		d := oob.New(oob.Options{Handling: oob.Handling{"log": "1"}, Stdout: out, Terminal: notTerminal})
		t.Cleanup(func() { d.Close() })
		return oob.NewSlogHandler(d)
	}, func(t *testing.T) map[string]any {
		if strings.HasSuffix(t.Name(), "/zero-time") {
			// Deliberate: every record gets a time (Handle stamps "now").
			t.Skip("records are always stamped with a time")
		}
		lines := out.lines()
		if len(lines) != 1 {
			t.Fatalf("lines written: got %d, want 1", len(lines))
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
			t.Fatal(err)
		}
		res := map[string]any{}
		if details, ok := m["details"].(map[string]any); ok {
			maps.Copy(res, details)
		}
		res[slog.TimeKey] = m["time"]
		res[slog.MessageKey] = m["text"]
		if _, ok := res[slog.LevelKey]; !ok {
			res[slog.LevelKey] = m["oob_channel"]
		}
		return res
	})
}
