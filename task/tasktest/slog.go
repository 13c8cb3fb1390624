package tasktest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/multimodule/multimodule/message"
)

// logHandler records a task's Logger output as out-of-band records, with
// the daemon's mapping of levels to channels. Every level is enabled, as
// with the daemon's highest -d.
type logHandler struct {
	r       *Recorder
	channel string         // set by a top-level "channel" attribute
	base    map[string]any // details from WithAttrs, nested by group
	groups  []string       // open groups, outermost first
}

var _ slog.Handler = (*logHandler)(nil)

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, sr slog.Record) error {
	ch := "log"
	switch {
	case sr.Level < slog.LevelInfo:
		ch = "debug"
	case sr.Level >= slog.LevelError:
		ch = "error"
	}
	if h.channel != "" {
		ch = h.channel
	}
	details := copyDetails(h.base)
	sr.Attrs(func(a slog.Attr) bool {
		if len(h.groups) == 0 && a.Key == "channel" && a.Value.Kind() == slog.KindString {
			ch = a.Value.String()
			return true
		}
		if details == nil {
			details = map[string]any{}
		}
		addAttr(openPath(details, h.groups), a)
		return true
	})
	h.r.out(ch, sr.Message, details)
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.base = copyDetails(h.base)
	for _, a := range attrs {
		if len(h.groups) == 0 && a.Key == "channel" && a.Value.Kind() == slog.KindString {
			h2.channel = a.Value.String()
			continue
		}
		if h2.base == nil {
			h2.base = map[string]any{}
		}
		addAttr(openPath(h2.base, h.groups), a)
	}
	return &h2
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(h.groups[:len(h.groups):len(h.groups)], name)
	return &h2
}

// openPath returns the map at path under m, creating maps on the way.
func openPath(m map[string]any, path []string) map[string]any {
	for _, g := range path {
		sub, ok := m[g].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[g] = sub
		}
		m = sub
	}
	return m
}

// copyDetails deep-copies details (nil stays nil).
func copyDetails(d map[string]any) map[string]any {
	if d == nil {
		return nil
	}
	return message.Message(d).Copy()
}

// addAttr stores a in m: groups as nested maps (inlined when their key is
// empty), values as JSON-compatible ones.
func addAttr(m map[string]any, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		target := m
		if a.Key != "" {
			target = openPath(m, []string{a.Key})
		}
		for _, ga := range v.Group() {
			addAttr(target, ga)
		}
		return
	}
	if a.Key == "" {
		return
	}
	m[a.Key] = logValue(v)
}

// logValue converts a resolved slog value to a JSON-compatible one:
// durations and times as text, anything else JSON cannot carry as its
// fmt text.
func logValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindFloat64:
		return v.Float64()
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().UTC().Format(time.RFC3339Nano)
	}
	if err, ok := v.Any().(error); ok {
		return err.Error()
	}
	if n, err := message.NormalizeValue(v.Any()); err == nil {
		return n
	}
	return fmt.Sprint(v.Any())
}
