package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/oob"
)

// control consumes the control queue. A message is
// acknowledged once handled: its configs saved durably (or rejected by
// their tasks), its controls done, its errors reported. One whose
// accepted configs could not be saved before the daemon began to exit
// (the state directory full, say) is not: it comes again at the next
// start, and the messages behind it with it.
func (m *mainRole) control(ctx context.Context) {
	d := m.d
	cons, err := d.tr.Consume(ctx, d.opts.ControlQueue)
	if err != nil {
		d.log.Error("control queue: cannot consume", "queue", d.opts.ControlQueue, "error", err)
		return
	}
	defer cons.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case dl, ok := <-cons.C():
			if !ok {
				return
			}
			err := m.handleControl(ctx, dl.Msg)
			if err != nil && !onlyNotes(err) {
				// Named by its fields, never by its values: a control
				// message carries configs, and configs carry secrets.
				details := map[string]any{"fields": fieldPaths(dl.Msg)}
				if errors.Is(err, host.ErrNotSaved) {
					// No verdict either: the message is not done.
					d.host.Out(oob.ChannelAlert, "main", fmt.Sprintf("control message not acknowledged, to be applied again at the next start: %v", err), details)
					return
				}
				d.host.Out(oob.ChannelError, "main", fmt.Sprintf("control message rejected: %v", err), details)
			}
			m.saveReasons()
			d.reply(dl.Msg, err, m.statusFor(ctx, dl.Msg))
			if err := dl.Ack(); err != nil {
				d.log.Warn("control queue: ack failed; the message may be applied again", "error", err)
			}
		}
	}
}

// Bounds of fieldPaths: how deep it names keys, and how many.
const (
	fieldPathDepth = 4
	fieldPathMax   = 64
)

// fieldPaths names the fields of a message without their values, for an
// error record about it: the key paths (".multimodule.config.Task.key",
// list items as "[i]"), sorted, down to fieldPathDepth levels, at most
// fieldPathMax of them (then "…").
func fieldPaths(m message.Message) []string {
	var out []string
	var walk func(prefix string, v any, depth int)
	walk = func(prefix string, v any, depth int) {
		if depth > fieldPathDepth {
			return
		}
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				p := prefix + "." + k
				if strings.HasPrefix(k, ".") && prefix == "" {
					p = k
				}
				out = append(out, p)
				walk(p, v[k], depth+1)
			}
		case []any:
			for i, e := range v {
				if _, ok := e.(map[string]any); ok {
					walk(fmt.Sprintf("%s[%d]", prefix, i), e, depth+1)
				}
			}
		}
	}
	walk("", map[string]any(m), 0)
	if len(out) > fieldPathMax {
		out = append(out[:fieldPathMax], "…")
	}
	return out
}

// knownName reports whether s looks like a name (a control type, say)
// rather than data: short, letters, digits and "_" only. Only such
// strings are quoted back in errors.
func knownName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// handleControl applies one control message.
func (m *mainRole) handleControl(ctx context.Context, msg message.Message) error {
	d := m.d
	mm, ok := msg[".multimodule"].(map[string]any)
	if !ok {
		return errors.New(`a control message must have a ".multimodule" map`)
	}
	var errs []error
	handled := false
	if c, ok := mm["config"]; ok {
		handled = true
		cfg, ok := c.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf(".multimodule.config must be a map, got %T", c))
		} else if err := d.host.ConfigureAllContext(ctx, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if c, ok := mm["control"]; ok {
		handled = true
		list, ok := c.([]any)
		if !ok {
			errs = append(errs, fmt.Errorf(".multimodule.control must be a list, got %T", c))
		}
		for i, item := range list {
			ctl, ok := item.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf(".multimodule.control[%d] must be a map", i))
				continue
			}
			switch ctl["type"] {
			case "failsafe", "unfailsafe":
				name, _ := ctl["task"].(string)
				var err error
				if ctl["type"] == "failsafe" {
					reason, _ := ctl["reason"].(string)
					err = m.failsafe(name, map[string]any{"summary": "failsafed by an operator: " + reason, "reason": reason}, "operator")
				} else {
					err = m.unfailsafe(name)
				}
				var note *controlNote
				switch {
				case errors.As(err, &note):
					errs = append(errs, note)
				case err != nil:
					errs = append(errs, fmt.Errorf(".multimodule.control[%d] %v: %w", i, ctl["type"], err))
				}
			case "status":
				// Answered in the verdict (statusFor), nothing to do.
			case "cleanly_exit":
				select {
				case d.exitCh <- exitRequest{exitExternals: message.Truthy(ctl["exit_externals"]), reason: "cleanly_exit"}:
				default:
				}
			default:
				typ, _ := ctl["type"].(string)
				if !knownName(typ) {
					typ = fmt.Sprintf("(a %T that is not a type name)", ctl["type"])
				}
				errs = append(errs, fmt.Errorf(".multimodule.control[%d]: unknown type %s (known: cleanly_exit, failsafe, status, unfailsafe)", i, typ))
			}
		}
	}
	if !handled {
		errs = append(errs, errors.New(".multimodule has neither config nor control"))
	}
	return errors.Join(errs...)
}

// statusFor is the daemon's task status, as its HTTP API gives it
// (/api/v1/tasks), when control message msg asks for it (a control item
// of type status); nil otherwise.
func (m *mainRole) statusFor(ctx context.Context, msg message.Message) []observe.Task {
	mm, _ := msg[".multimodule"].(map[string]any)
	list, _ := mm["control"].([]any)
	asked := false
	for _, item := range list {
		if ctl, ok := item.(map[string]any); ok && ctl["type"] == "status" {
			asked = true
		}
	}
	if !asked {
		return nil
	}
	snap, err := daemonSource{m}.Snapshot(ctx)
	if err != nil {
		m.d.log.Warn("control: status asked for, but not all of it could be gathered", "error", err)
	}
	if snap.Tasks == nil {
		snap.Tasks = []observe.Task{}
	}
	return snap.Tasks
}
