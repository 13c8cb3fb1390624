// Package router routes messages by content, with the semantics of the
// original Perl Message::Router and IPC::Transit::Router.
//
// A Router is compiled from a config map:
//
//	routes:                 # a list, or a map whose keys are numbers (numeric order)
//	  - match: {source: Example1}             # a match pattern (package match)
//	    transform: {seen_by: router}          # optional (package transform)
//	    forwards:                             # optional
//	      - qname: Example2
//	      - {qname: audit, destination: box2} # destination: another host
//	    .router_control: {short_circuit: true} # optional: stop here if this route matched
//
// Route tries every route in order. A route that matches applies its
// transform to the message (so later routes see the change) and hands a
// deep copy of the message to the Forwarder for each of its forwards.
// Several matching routes mean several deliveries. RouteOwned is the same
// for a caller that gives the message away: the last delivery takes the
// message itself, saving a copy.
//
// A message that carries a non-empty list "static_forwards" bypasses the
// routes: the list's first element (one hop: a list of
// {forward: {qname, destination?}, transform?, log_history?}) is removed,
// the list itself is removed once empty, and each entry of the hop gets its
// own copy of the message, transformed with the entry's transform and,
// with log_history, with the entry appended to
// .static_forwards_log.forward_history, then forwarded.
//
// Compile validates the whole config and compiles every pattern and
// transform, so Route does no parsing and no reflection per message. A
// Router is safe for concurrent use; its counters (Stats) may be read while
// Route runs.
//
// Defences (options of the same config map):
//
//	max_passes: 32          # CountPass refuses a message after this many passes
//	allow_control: false    # true: deliveries may go to the control queue and carry .multimodule
//	control_queue: MultiModule_control
//	static_forwards: true   # false: messages' static_forwards are ignored (the routes apply)
//
// A message the Router refuses as a whole — a routing loop, control data,
// a transform that broke its limits — gets an error that Is ErrRefused (a
// *Refusal, with the reason): the caller should dead-letter it.
package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// Forward is one delivery target: queue QName, on host Destination (""
// means this host).
type Forward struct {
	QName       string
	Destination string
}

// String returns the forward as Stats names it: "qname", or
// "qname@destination" for another host.
func (f Forward) String() string {
	if f.Destination == "" {
		return f.QName
	}
	return f.QName + "@" + f.Destination
}

// Forwarder delivers routed messages.
type Forwarder interface {
	// Forward delivers msg to fwd. msg is the router's own copy: the
	// callee owns it and may keep or change it. A Forward that fails
	// must not keep msg (RouteOwned's caller may still read it then).
	Forward(ctx context.Context, fwd Forward, msg message.Message) error
}

// ForwarderFunc adapts a function to the Forwarder interface.
type ForwarderFunc func(ctx context.Context, fwd Forward, msg message.Message) error

// Forward calls f(ctx, fwd, msg).
func (f ForwarderFunc) Forward(ctx context.Context, fwd Forward, msg message.Message) error {
	return f(ctx, fwd, msg)
}

var _ Forwarder = ForwarderFunc(nil)

// QueueStats counts the deliveries to one queue.
type QueueStats struct {
	Matched   uint64 // deliveries attempted: a route (or static hop) sent a message to this queue
	Forwarded uint64 // deliveries the Forwarder accepted
	Failed    uint64 // deliveries the Forwarder refused (returned an error)
}

// Router is a compiled router config. It is safe for concurrent use.
type Router struct {
	routes []route
	queues map[string]*counters // the configured forwards' counters; fixed at Compile

	maxPasses    int64  // max_passes
	allowControl bool   // allow_control
	controlQueue string // control_queue
	static       bool   // static_forwards

	mu      sync.Mutex           // guards dynamic
	dynamic map[string]*counters // counters of queues reached only by static forwards
}

// route is one compiled route.
type route struct {
	name         string // its list index or map key, for errors
	pattern      *match.Pattern
	transform    *transform.Transform // nil: none
	setsMeta     bool                 // the transform sets .ipc_transit_meta
	forwards     []forward
	shortCircuit bool
}

// forward is one compiled forward of a route.
type forward struct {
	fwd   Forward
	stats *counters
}

type counters struct {
	matched, forwarded, failed atomic.Uint64
}

// Errors from Route that callers may want to tell apart.
var (
	ErrNilMessage   = errors.New("router: nil message")
	ErrNilForwarder = errors.New("router: nil forwarder")
	ErrNilRouter    = errors.New("router: nil router")

	// ErrRefused is wrapped by the error of a message the Router refused
	// as a whole (a *Refusal): it should be dead-lettered.
	ErrRefused = errors.New("router: message refused")
	// ErrRoutingLoop: the message passed through the Router max_passes
	// times (a Refusal).
	ErrRoutingLoop = errors.New("routing loop")
	// ErrControl: the message would deliver control data — to the control
	// queue, or carrying a .multimodule key — and the config does not
	// allow it (a Refusal).
	ErrControl = errors.New("control data refused")
	// ErrLimit: a static hop has more than MaxStaticEntries forwards (a
	// Refusal). A transform over its limits is refused with the
	// transform's own error (transform.ErrLimit).
	ErrLimit = errors.New("static forwards over their limit")
)

// Refusal is the error of a message refused as a whole. Reason says why,
// for the dead letter; it Is ErrRefused and wraps its cause (ErrRoutingLoop,
// ErrControl, or a transform's transform.ErrLimit error).
type Refusal struct {
	Reason string
	Err    error
}

func (e *Refusal) Error() string        { return "router: " + e.Reason }
func (e *Refusal) Unwrap() error        { return e.Err }
func (e *Refusal) Is(target error) bool { return target == ErrRefused }
func refuse(cause error, format string, args ...any) *Refusal {
	return &Refusal{Reason: fmt.Sprintf(format, args...), Err: cause}
}

// Keys and defaults of the Router's own options.
const (
	// ControlKey is the top-level key of control data: the daemon's
	// control queue reads .multimodule.config and .multimodule.control,
	// every task's queue .multimodule.transform (a state patch).
	ControlKey = ".multimodule"
	// PassesKey is the key, in the message's .ipc_transit_meta, that
	// counts its passes through the Router.
	PassesKey = "router_passes"

	DefaultMaxPasses    = 32
	DefaultControlQueue = "MultiModule_control"
)

// Compile validates config and compiles it. Keys other than
// "routes" are ignored (a task's config carries framework keys too). The
// error names the offending route and field, for example
//
//	router: route 3: forwards[1]: qname must be a string, got a number
//
// Routes in a map are named by their key, routes in a list by their index
// (from 0). An optional field (transform, forwards, destination,
// .router_control) set to null counts as absent.
func Compile(config map[string]any) (*Router, error) {
	raw, ok := config["routes"]
	if !ok {
		return nil, errors.New("router: config has no routes")
	}
	norm, err := message.NormalizeValue(raw)
	if err != nil {
		return nil, fmt.Errorf("router: routes: %w", err)
	}
	type named struct {
		name string
		v    any
	}
	var list []named
	switch t := norm.(type) {
	case []any:
		list = make([]named, len(t))
		for i, v := range t {
			list[i] = named{strconv.Itoa(i), v}
		}
	case map[string]any:
		type keyed struct {
			named
			n float64
		}
		keys := make([]keyed, 0, len(t))
		for k, v := range t {
			n, err := strconv.ParseFloat(k, 64)
			if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
				return nil, fmt.Errorf("router: routes: key %q is not a number (routes in a map run in numeric key order)", k)
			}
			keys = append(keys, keyed{named{k, v}, n})
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].n != keys[j].n {
				return keys[i].n < keys[j].n
			}
			return keys[i].name < keys[j].name
		})
		list = make([]named, len(keys))
		for i, k := range keys {
			list[i] = k.named
		}
	default:
		return nil, fmt.Errorf("router: routes must be a list or a map with numeric keys, got %s", describe(norm))
	}

	r := &Router{
		routes:       make([]route, 0, len(list)),
		queues:       map[string]*counters{},
		dynamic:      map[string]*counters{},
		maxPasses:    DefaultMaxPasses,
		controlQueue: DefaultControlQueue,
		static:       true,
	}
	if err := r.options(config); err != nil {
		return nil, err
	}
	for _, n := range list {
		rt, err := r.compileRoute(n.name, n.v)
		if err != nil {
			return nil, fmt.Errorf("router: route %s: %w", n.name, err)
		}
		r.routes = append(r.routes, rt)
	}
	return r, nil
}

// options reads the Router's own options (see the package doc).
func (r *Router) options(config map[string]any) error {
	if v, ok := config["max_passes"]; ok && v != nil {
		n, ok := message.Float(v)
		if !ok || n < 1 || n != math.Trunc(n) || n > math.MaxInt32 {
			return fmt.Errorf("router: max_passes must be a whole number of at least 1, got %s", describeValue(v))
		}
		r.maxPasses = int64(n)
	}
	for key, dst := range map[string]*bool{"allow_control": &r.allowControl, "static_forwards": &r.static} {
		if v, ok := config[key]; ok && v != nil {
			b, ok := v.(bool)
			if !ok {
				return fmt.Errorf("router: %s must be true or false, got %s", key, describeValue(v))
			}
			*dst = b
		}
	}
	if v, ok := config["control_queue"]; ok && v != nil {
		q, ok := v.(string)
		if !ok || q == "" {
			return fmt.Errorf("router: control_queue must be a queue name, got %s", describeValue(v))
		}
		r.controlQueue = q
	}
	return nil
}

// describeValue is describe with the value, for option errors.
func describeValue(v any) string {
	if t, ok := message.ScalarText(v); ok {
		return fmt.Sprintf("%s (%s)", describe(v), t)
	}
	return describe(v)
}

func (r *Router) compileRoute(name string, v any) (route, error) {
	rt := route{name: name}
	m, ok := v.(map[string]any)
	if !ok {
		return rt, fmt.Errorf("must be a map, got %s", describe(v))
	}

	mv, ok := m["match"]
	if !ok {
		return rt, errors.New("match: missing (use match: {} to match every message)")
	}
	pat, ok := mv.(map[string]any)
	if !ok {
		return rt, fmt.Errorf("match must be a map, got %s", describe(mv))
	}
	p, err := match.Compile(pat)
	if err != nil {
		return rt, err
	}
	rt.pattern = p

	if tv := m["transform"]; tv != nil {
		tm, ok := tv.(map[string]any)
		if !ok {
			return rt, fmt.Errorf("transform must be a map, got %s", describe(tv))
		}
		if len(tm) > 0 {
			if _, ok := tm[ControlKey]; ok && !r.allowControl {
				return rt, fmt.Errorf("transform: sets %s (control data), which needs allow_control: true", ControlKey)
			}
			t, err := transform.Compile(tm)
			if err != nil {
				return rt, err
			}
			rt.transform = t
			_, rt.setsMeta = tm[message.MetaKey]
		}
	}

	if fv := m["forwards"]; fv != nil {
		fl, ok := fv.([]any)
		if !ok {
			return rt, fmt.Errorf("forwards must be a list, got %s", describe(fv))
		}
		rt.forwards = make([]forward, 0, len(fl))
		for i, e := range fl {
			fwd, err := parseForward(e)
			if err != nil {
				return rt, fmt.Errorf("forwards[%d]: %w", i, err)
			}
			if fwd.QName == r.controlQueue && !r.allowControl {
				return rt, fmt.Errorf("forwards[%d]: %q is the control queue, which needs allow_control: true", i, fwd.QName)
			}
			rt.forwards = append(rt.forwards, forward{fwd: fwd, stats: r.configuredCounters(fwd)})
		}
	}

	if cv := m[".router_control"]; cv != nil {
		cm, ok := cv.(map[string]any)
		if !ok {
			return rt, fmt.Errorf(".router_control must be a map, got %s", describe(cv))
		}
		rt.shortCircuit = message.Truthy(cm["short_circuit"])
	}
	return rt, nil
}

// configuredCounters returns the counters of a configured forward's queue,
// creating them during Compile.
func (r *Router) configuredCounters(f Forward) *counters {
	key := f.String()
	c := r.queues[key]
	if c == nil {
		c = &counters{}
		r.queues[key] = c
	}
	return c
}

// countersFor returns the counters of any queue, creating those of a
// queue reached only by static forwards on first use.
func (r *Router) countersFor(f Forward) *counters {
	key := f.String()
	if c := r.queues[key]; c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.dynamic[key]
	if c == nil {
		c = &counters{}
		r.dynamic[key] = c
	}
	return c
}

// parseForward reads one forward map: a non-empty string qname and an
// optional string destination.
func parseForward(v any) (Forward, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Forward{}, fmt.Errorf("must be a map, got %s", describe(v))
	}
	qv, ok := m["qname"]
	if !ok {
		return Forward{}, errors.New("qname: missing")
	}
	q, ok := qv.(string)
	if !ok {
		return Forward{}, fmt.Errorf("qname must be a string, got %s", describe(qv))
	}
	if q == "" {
		return Forward{}, errors.New("qname must not be empty")
	}
	f := Forward{QName: q}
	if dv := m["destination"]; dv != nil {
		d, ok := dv.(string)
		if !ok {
			return Forward{}, fmt.Errorf("destination must be a string, got %s", describe(dv))
		}
		f.Destination = d
	}
	return f, nil
}

// Stats returns the delivery counters per queue, keyed "qname" or
// "qname@destination". Every configured forward's queue is present (with
// zeros until used), plus every queue a static forward has reached.
func (r *Router) Stats() map[string]QueueStats {
	if r == nil {
		return map[string]QueueStats{}
	}
	out := make(map[string]QueueStats, len(r.queues))
	for k, c := range r.queues {
		out[k] = c.snapshot()
	}
	r.mu.Lock()
	for k, c := range r.dynamic {
		out[k] = c.snapshot()
	}
	r.mu.Unlock()
	return out
}

// snapshot reads the outcomes before the attempts: a delivery is counted
// as matched before its outcome, so reading matched last never shows more
// outcomes than attempts while Route runs.
func (c *counters) snapshot() QueueStats {
	forwarded, failed := c.forwarded.Load(), c.failed.Load()
	return QueueStats{Matched: c.matched.Load(), Forwarded: forwarded, Failed: failed}
}

// describe names the JSON type of a value for error messages.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a bool"
	case string:
		return "a string"
	case int64, float64, int:
		return "a number"
	case []any:
		return "a list"
	case map[string]any, message.Message:
		return "a map"
	}
	if _, ok := message.ScalarText(v); ok {
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}
