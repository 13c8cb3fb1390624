package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// MaxStaticEntries is the largest number of forwards one hop of a
// message's static_forwards may have: each gets its own copy of the
// message, so a hop of thousands of forwards in a large message would
// make gigabytes of copies.
const MaxStaticEntries = 64

// Keys of the static-forward itinerary a message may carry.
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
//
// A message refused as a whole stops Route at once, with a *Refusal
// among the errors (errors.Is ErrRefused): one carrying control data
// (ErrControl), a static hop to the control queue or whose transform sets
// a "." key (ErrControl) or with more than MaxStaticEntries forwards
// (ErrLimit), a transform that broke its limits (transform.ErrLimit; it
// set nothing). Deliveries made before stand; the caller should
// dead-letter the message.
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

// CountPass counts one pass of msg through the Router, in its
// .ipc_transit_meta.router_passes. A message that already passed
// max_passes times is not counted again: CountPass returns a Refusal
// wrapping ErrRoutingLoop, and the message should be dead-lettered
// instead of routed. The Router task calls it before Route; a message
// that a task builds anew (instead of passing on the one it got) starts
// again at zero.
func (r *Router) CountPass(msg message.Message) error {
	switch {
	case r == nil:
		return ErrNilRouter
	case msg == nil:
		return ErrNilMessage
	}
	meta := msg.EnsureMeta()
	n, _ := message.Int(meta[PassesKey])
	if n >= r.maxPasses {
		return refuse(ErrRoutingLoop, "routing loop: the message passed through the Router %d times (max_passes %d)", n, r.maxPasses)
	}
	meta[PassesKey] = n + 1
	return nil
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
	if !r.allowControl {
		if _, ok := msg[ControlKey]; ok {
			return refuse(ErrControl, "the message carries %s (control data); the Router delivers it only with allow_control: true", ControlKey)
		}
	}
	if r.static {
		if hops, ok := msg[StaticForwardsKey].([]any); ok && len(hops) > 0 {
			return r.routeStatic(ctx, msg, hops, f, owned)
		}
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
			var passes any
			if rt.setsMeta {
				passes = msg.Meta()[PassesKey]
			}
			if err := rt.transform.Apply(msg, caps); err != nil {
				if errors.Is(err, transform.ErrLimit) {
					// Applied nothing; routing it on would do the same again.
					return errors.Join(append(errs, refuse(err, "route %s: %v", rt.name, err))...)
				}
				errs = append(errs, fmt.Errorf("router: route %s: %w", rt.name, err))
			}
			if passes != nil {
				// The count of passes survives a transform that replaces
				// the metadata, or a loop through it would run forever.
				msg.EnsureMeta()[PassesKey] = passes
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

// staticEntry is one checked entry of a static hop.
type staticEntry struct {
	fwd       Forward
	transform *transform.Transform // nil: none
	entry     map[string]any
}

// routeStatic takes the first hop off msg's static_forwards and delivers
// a copy of msg to each of its entries. Owned (RouteOwned): the last entry
// gets msg itself when nothing failed before it.
//
// Every entry is checked (its forward parsed, its transform compiled)
// before anything is delivered, so a hop the Router refuses — control
// data, a transform over its limits — delivers nothing. An entry whose
// forward is malformed is reported and skipped; one whose transform is
// malformed is reported and gets the message untransformed. A transform
// that breaks its limits while applied stops the hop: msg gets its hop
// back, for the dead letter.
func (r *Router) routeStatic(ctx context.Context, msg message.Message, hops []any, f Forwarder, owned bool) error {
	hop := hops[0]
	entries, ok := hop.([]any)
	if !ok {
		r.dropHop(msg, hops)
		return fmt.Errorf("router: %s[0] must be a list of forwards, got %s", StaticForwardsKey, describe(hop))
	}
	if len(entries) > MaxStaticEntries {
		return refuse(ErrLimit, "%s[0] has %d forwards, at most %d are allowed in one hop (each gets its own copy of the message)",
			StaticForwardsKey, len(entries), MaxStaticEntries)
	}
	var errs []error
	checked := make([]staticEntry, 0, len(entries))
	for i, e := range entries {
		where := fmt.Sprintf("%s[0][%d]", StaticForwardsKey, i)
		entry, ok := e.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("router: %s: must be a map, got %s", where, describe(e)))
			continue
		}
		fwd, err := parseForward(entry["forward"])
		if err != nil {
			errs = append(errs, fmt.Errorf("router: %s: forward: %w", where, err))
			continue
		}
		if !r.allowControl && fwd.QName == r.controlQueue {
			return refuse(ErrControl, "%s: forwards to the control queue %q; the Router does that only with allow_control: true", where, fwd.QName)
		}
		se := staticEntry{fwd: fwd, entry: entry}
		if tv := entry["transform"]; tv != nil {
			tm, ok := tv.(map[string]any)
			if !ok {
				// Reported; the entry still gets the message, untransformed.
				errs = append(errs, fmt.Errorf("router: %s: transform must be a map, got %s", where, describe(tv)))
				checked = append(checked, se)
				continue
			}
			if !r.allowControl {
				for k := range tm {
					if len(k) > 0 && k[0] == '.' {
						return refuse(ErrControl, "%s: its transform sets %q: a transform that travels in a message may not set keys starting with \".\" (control data, the Router's metadata) unless allow_control: true", where, k)
					}
				}
			}
			t, err := transform.Compile(tm)
			if err != nil {
				if errors.Is(err, transform.ErrLimit) {
					return refuse(err, "%s: %v", where, err)
				}
				errs = append(errs, fmt.Errorf("router: %s: %w", where, err))
			}
			se.transform = t // nil when it did not compile
		}
		checked = append(checked, se)
	}
	r.dropHop(msg, hops)
	// copies makes the entries' copies; msg does not change until the
	// last entry, which may take msg itself.
	var copies message.Copier
	copies.Reset(msg)
	for i := range checked {
		se := &checked[i]
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("router: %s[0] to %q: stopped before forwarding: %w", StaticForwardsKey, se.fwd.String(), err))...)
		}
		cp := msg
		// The last delivery takes msg itself: nothing reads msg after it.
		given := owned && i == len(checked)-1 && len(errs) == 0
		if !given {
			cp = copies.Copy()
		}
		if se.transform != nil {
			if err := se.transform.Apply(cp, nil); err != nil {
				if errors.Is(err, transform.ErrLimit) {
					msg[StaticForwardsKey] = hops // the dead letter gets it as it came
					return errors.Join(append(errs, refuse(err, "%s[0] to %q: %v", StaticForwardsKey, se.fwd.String(), err))...)
				}
				errs = append(errs, fmt.Errorf("router: %s[0] to %q: %w", StaticForwardsKey, se.fwd.String(), err))
				if given {
					cp = msg.Copy() // the caller keeps msg to report the error
				}
			}
		}
		if message.Truthy(se.entry["log_history"]) {
			logHistory(cp, se.entry)
		}
		if err := deliver(ctx, f, se.fwd, r.countersFor(se.fwd), cp); err != nil {
			errs = append(errs, fmt.Errorf("router: %s[0] to %q: %w", StaticForwardsKey, se.fwd.String(), err))
		}
	}
	return errors.Join(errs...)
}

// dropHop removes the first hop from msg's static_forwards, and the list
// once it is empty.
func (r *Router) dropHop(msg message.Message, hops []any) {
	if len(hops) > 1 {
		msg[StaticForwardsKey] = hops[1:]
	} else {
		delete(msg, StaticForwardsKey)
	}
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
