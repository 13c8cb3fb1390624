package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// Keys of the static-forward itinerary a message may carry (SPEC 5).
const (
	StaticForwardsKey = "static_forwards"
	StaticLogKey      = ".static_forwards_log"
	ForwardHistoryKey = "forward_history"
)

// Route routes msg: through the routes, or along its static forwards when
// it carries a non-empty static_forwards list. Route changes msg: matching
// routes' transforms are applied to it (later routes see them), and a
// static hop is removed from it. Every delivery gets its own deep copy.
//
// Route delivers everything it can. It returns nil, or the problems it
// met joined with errors.Join: a transform expression that failed (the
// message still flows, without that key), a forward the Forwarder refused,
// a malformed static forward. Each names the route (or static hop entry)
// and queue. When ctx is done, Route stops before the next delivery and
// the returned error includes ctx.Err().
func (r *Router) Route(ctx context.Context, msg message.Message, f Forwarder) error {
	return r.route(ctx, msg, f, false)
}

// RouteOwned is Route for a caller that gives msg away: the last delivery
// gets msg itself instead of a copy, which saves one deep copy per routed
// message. Every other delivery still gets its own copy, taken before
// anything later (a transform of a later route) changes msg, so no two
// deliveries share anything — exactly as with Route.
//
// After RouteOwned returned nil the caller must not use msg again: its
// new owner may be changing it. When RouteOwned returns an error, msg was
// not given away (the last delivery got a copy, or it failed, and a
// Forwarder that fails does not keep msg), so the caller may still read
// it, for example to report it.
func (r *Router) RouteOwned(ctx context.Context, msg message.Message, f Forwarder) error {
	return r.route(ctx, msg, f, true)
}

func (r *Router) route(ctx context.Context, msg message.Message, f Forwarder, owned bool) error {
	switch {
	case r == nil:
		return ErrNilRouter
	case msg == nil:
		return ErrNilMessage
	case f == nil:
		return ErrNilForwarder
	}
	if hops, ok := msg[StaticForwardsKey].([]any); ok && len(hops) > 0 {
		return r.routeStatic(ctx, msg, hops, f, owned)
	}
	var errs []error
	// held (owned mode only) is the latest delivery found, not made yet:
	// if nothing follows it, it takes msg itself. It is made with a copy
	// as soon as anything else happens to msg or another delivery is due.
	var held *forward
	var heldRoute string
	// cp makes the deliveries' copies of msg; it learns msg's shape at
	// the first copy and must be Reset whenever msg changes.
	var cp message.Copier
	cp.Reset(msg)
	for i := range r.routes {
		rt := &r.routes[i]
		ok, caps := rt.pattern.MatchCaptures(msg)
		if !ok {
			continue
		}
		if rt.transform != nil {
			if held != nil {
				if send(ctx, f, heldRoute, held, cp.Copy(), &errs) {
					return errors.Join(errs...)
				}
				held = nil
			}
			if err := rt.transform.Apply(msg, caps); err != nil {
				errs = append(errs, fmt.Errorf("router: route %s: %w", rt.name, err))
			}
			cp.Reset(msg)
		}
		for j := range rt.forwards {
			if held != nil {
				if send(ctx, f, heldRoute, held, cp.Copy(), &errs) {
					return errors.Join(errs...)
				}
				held = nil
			}
			fw := &rt.forwards[j]
			if owned {
				held, heldRoute = fw, rt.name
				continue
			}
			if send(ctx, f, rt.name, fw, cp.Copy(), &errs) {
				return errors.Join(errs...)
			}
		}
		if rt.shortCircuit {
			break
		}
	}
	if held != nil {
		m := msg
		if len(errs) > 0 {
			m = msg.Copy() // the caller keeps msg to report the errors
		}
		send(ctx, f, heldRoute, held, m, &errs)
	}
	return errors.Join(errs...)
}

// send makes one delivery of route routeName, unless ctx is done: then it
// records why and reports stop.
func send(ctx context.Context, f Forwarder, routeName string, fw *forward, msg message.Message, errs *[]error) (stop bool) {
	if err := ctx.Err(); err != nil {
		*errs = append(*errs, fmt.Errorf("router: route %s: stopped before forwarding to %q: %w", routeName, fw.fwd.String(), err))
		return true
	}
	if err := deliver(ctx, f, fw.fwd, fw.stats, msg); err != nil {
		*errs = append(*errs, fmt.Errorf("router: route %s: %w", routeName, err))
	}
	return false
}

// deliver hands msg to f and counts the outcome.
func deliver(ctx context.Context, f Forwarder, fwd Forward, c *counters, msg message.Message) error {
	c.matched.Add(1)
	if err := f.Forward(ctx, fwd, msg); err != nil {
		c.failed.Add(1)
		return fmt.Errorf("forward to %q: %w", fwd.String(), err)
	}
	c.forwarded.Add(1)
	return nil
}

// routeStatic takes the first hop off msg's static_forwards and delivers
// a copy of msg to each of its entries. Owned (RouteOwned): the last entry
// gets msg itself when nothing failed before it.
func (r *Router) routeStatic(ctx context.Context, msg message.Message, hops []any, f Forwarder, owned bool) error {
	hop := hops[0]
	if len(hops) > 1 {
		msg[StaticForwardsKey] = hops[1:]
	} else {
		delete(msg, StaticForwardsKey)
	}
	entries, ok := hop.([]any)
	if !ok {
		return fmt.Errorf("router: %s[0] must be a list of forwards, got %s", StaticForwardsKey, describe(hop))
	}
	var errs []error
	// copies makes the entries' copies; msg does not change until the
	// last entry, which may take msg itself.
	var copies message.Copier
	copies.Reset(msg)
	for i, e := range entries {
		where := fmt.Sprintf("router: %s[0][%d]", StaticForwardsKey, i)
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("%s: stopped before forwarding: %w", where, err))...)
		}
		entry, ok := e.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: must be a map, got %s", where, describe(e)))
			continue
		}
		fwd, err := parseForward(entry["forward"])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: forward: %w", where, err))
			continue
		}
		cp := msg
		// The last delivery takes msg itself: nothing reads msg after it.
		given := owned && i == len(entries)-1 && len(errs) == 0
		if !given {
			cp = copies.Copy()
		}
		if tv := entry["transform"]; tv != nil {
			if err := applyStaticTransform(cp, tv); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				if given {
					cp = msg.Copy() // the caller keeps msg to report the error
				}
			}
		}
		if message.Truthy(entry["log_history"]) {
			logHistory(cp, entry)
		}
		if err := deliver(ctx, f, fwd, r.countersFor(fwd), cp); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errors.Join(errs...)
}

// applyStaticTransform applies a static forward entry's transform. It is
// compiled per message: the itinerary travels with the message, so there
// is no config time to compile it at.
func applyStaticTransform(m message.Message, tv any) error {
	tm, ok := tv.(map[string]any)
	if !ok {
		return fmt.Errorf("transform must be a map, got %s", describe(tv))
	}
	t, err := transform.Compile(tm)
	if err != nil {
		return err
	}
	return t.Apply(m, nil)
}

// logHistory appends a copy of entry to m's
// .static_forwards_log.forward_history, creating (or replacing a non-map
// or non-list) as needed.
func logHistory(m message.Message, entry map[string]any) {
	log, ok := m[StaticLogKey].(map[string]any)
	if !ok {
		log = map[string]any{}
		m[StaticLogKey] = log
	}
	hist, _ := log[ForwardHistoryKey].([]any)
	log[ForwardHistoryKey] = append(hist, message.CopyValue(entry))
}
