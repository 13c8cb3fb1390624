package oob

import (
	"context"
	"log/slog"
)

// The attributes the slog bridge reads instead of storing them as details
// (only at the top level, outside any group).
const (
	AttrChannel = "channel" // a string: the channel, overriding the level's
	AttrTask    = "task"    // a string: Record.Task
)

// NewSlogHandler returns a slog.Handler that turns slog records into
// out-of-band records handled by d, so framework code logs through
// log/slog and its output lands in the channels. attrs are added to every
// record, as with Handler.WithAttrs.
//
// Levels map to channels: below Info → "debug", Info and Warn → "log",
// Error and above → "error". A level that is not its channel's own (Warn
// on "log", Debug-1 on "debug", Error+4 on "error") is kept in the details
// as "level" (e.g. "WARN"). A string attribute "channel" overrides the
// channel (slog.Info("disk full", "channel", "alert")), a string attribute
// "task" sets Record.Task; every other attribute goes into Record.Details,
// groups as nested maps.
//
// Enabled is false below Info while d's debug level is too low: Debug
// needs -d 1, Debug-1 needs -d 2, and so on. With -d 0 a slog.Debug call
// returns at Enabled, before any work.
func NewSlogHandler(d *Dispatcher, attrs ...slog.Attr) slog.Handler {
	return NewRecordHandler(
		func(ctx context.Context, r Record, level slog.Level) {
			if _, own := levelChannel(level); level != own {
				if r.Details == nil {
					r.Details = map[string]any{}
				}
				if _, taken := r.Details["level"]; !taken {
					r.Details["level"] = level.String()
				}
			}
			d.Handle(ctx, r)
		},
		func(l slog.Level) bool { return d.DebugEnabled(debugVerbosity(l)) },
		attrs...)
}

// NewRecordHandler returns a slog.Handler that turns slog records into
// out-of-band records as NewSlogHandler does (the channel from the level
// or a "channel" attribute, Record.Task from a "task" attribute, every
// other attribute in the details) and gives each to handle, with the level
// it was logged at. debug says whether a level below Info is wanted; nil
// wants every level. It is for a caller that keeps the records itself (a
// test recorder) rather than handing them to a Dispatcher; NewSlogHandler
// is NewRecordHandler for a Dispatcher.
func NewRecordHandler(handle func(ctx context.Context, r Record, level slog.Level), debug func(slog.Level) bool, attrs ...slog.Attr) slog.Handler {
	h := &slogHandler{handle: handle, debug: debug}
	if len(attrs) > 0 {
		return h.WithAttrs(attrs)
	}
	return h
}

type slogHandler struct {
	handle  func(context.Context, Record, slog.Level)
	debug   func(slog.Level) bool // nil: every level below Info is wanted
	channel string                // set by a top-level "channel" attr
	task    string                // set by a top-level "task" attr
	base    map[string]any        // details from WithAttrs, already nested
	groups  []string              // open groups (WithGroup), outermost first
}

var _ slog.Handler = (*slogHandler)(nil)

// debugVerbosity is the -d level a slog level below Info needs.
func debugVerbosity(l slog.Level) int { return int(slog.LevelDebug-l) + 1 }

// levelChannel is the channel of slog level l, and the level that is the
// channel's own.
func levelChannel(l slog.Level) (channel string, own slog.Level) {
	switch {
	case l < slog.LevelInfo:
		return ChannelDebug, slog.LevelDebug
	case l >= slog.LevelError:
		return ChannelError, slog.LevelError
	}
	return ChannelLog, slog.LevelInfo
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.debug == nil || h.debug(l)
}

func (h *slogHandler) Handle(ctx context.Context, sr slog.Record) error {
	if !h.Enabled(ctx, sr.Level) {
		return nil
	}
	ch, _ := levelChannel(sr.Level)
	if h.channel != "" {
		ch = h.channel
	}
	r := Record{Channel: ch, Text: sr.Message, Task: h.task, Time: sr.Time}
	var details map[string]any
	if len(h.base) > 0 {
		details = jsonMap(h.base, 0)
	}
	if sr.NumAttrs() > 0 {
		var target map[string]any
		sr.Attrs(func(a slog.Attr) bool {
			if len(h.groups) == 0 && h.special(&r, a) {
				return true
			}
			if target == nil {
				if !hasContent(a) {
					return true
				}
				if details == nil {
					details = map[string]any{}
				}
				target = openPath(details, h.groups)
			}
			addAttr(target, a)
			return true
		})
	}
	r.Details = details
	h.handle(ctx, r, sr.Level)
	return nil
}

// special applies a top-level "channel" or "task" string attribute to r
// and reports whether it did.
func (h *slogHandler) special(r *Record, a slog.Attr) bool {
	if a.Key != AttrChannel && a.Key != AttrTask {
		return false
	}
	v := a.Value.Resolve()
	if v.Kind() != slog.KindString {
		return false
	}
	if a.Key == AttrChannel {
		if v.String() != "" {
			r.Channel = v.String()
		}
	} else {
		r.Task = v.String()
	}
	return true
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	if len(h.base) > 0 {
		h2.base = jsonMap(h.base, 0)
	} else {
		h2.base = nil
	}
	var target map[string]any
	for _, a := range attrs {
		if len(h.groups) == 0 {
			r := Record{Channel: h2.channel, Task: h2.task}
			if h2.special(&r, a) {
				h2.channel, h2.task = r.Channel, r.Task
				continue
			}
		}
		if !hasContent(a) {
			continue
		}
		if target == nil {
			if h2.base == nil {
				h2.base = map[string]any{}
			}
			target = openPath(h2.base, h.groups)
		}
		addAttr(target, a)
	}
	return &h2
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
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

// hasContent reports whether a adds anything: not the empty attr, not an
// empty group.
func hasContent(a slog.Attr) bool {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, ga := range v.Group() {
			if hasContent(ga) {
				return true
			}
		}
		return false
	}
	return a.Key != "" || v.Any() != nil
}

// addAttr stores a in m as JSON-compatible details, following slog's
// rules: values resolved, empty attrs and groups dropped, groups with an
// empty key inlined.
func addAttr(m map[string]any, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if !hasContent(a) {
			return
		}
		target := m
		if a.Key != "" {
			sub, ok := m[a.Key].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[a.Key] = sub
			}
			target = sub
		}
		for _, ga := range v.Group() {
			addAttr(target, ga)
		}
		return
	}
	if a.Key == "" && v.Any() == nil {
		return
	}
	m[a.Key] = slogValue(v)
}

// slogValue converts a resolved, non-group value to a canonical one.
func slogValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return jsonValue(v.Uint64(), 0)
	case slog.KindFloat64:
		return jsonValue(v.Float64(), 0)
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return jsonValue(v.Time(), 0)
	}
	return jsonValue(v.Any(), 0)
}
