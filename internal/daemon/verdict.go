package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/internal/placement"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// ReplyQueuePrefix begins the name of the queue a sender of a control
// message waits on for the daemon's verdict (`multimodule config apply`,
// `failsafe`, `unfailsafe`); such names are reserved.
const ReplyQueuePrefix = "MultiModule_reply."

// reservedName says why name cannot be configured (or failsafed): it is
// the daemon itself or one of its queues. "" when it is not reserved.
// The built-in tasks (Router, MultiModule, OutOfBand) are configurable;
// being stateless, they never run external.
func (d *Daemon) reservedName(name string) string {
	switch {
	case name == "main":
		return "the daemon itself"
	case name == d.opts.ControlQueue || name == DefaultControlQueue:
		return "the control queue"
	case name == transit.DeadLetterQueue:
		return "the dead-letter queue"
	case len(name) > len(ReplyQueuePrefix) && name[:len(ReplyQueuePrefix)] == ReplyQueuePrefix:
		return "a queue for the daemon's replies"
	}
	return ""
}

// placedScopeWait bounds how long accepting a placed task's config waits
// for the cluster scope on the bus (a cluster still electing, say).
const placedScopeWait = 60 * time.Second

// checkConfig is the host's CheckConfig in the daemon: a reserved name is
// refused, and so is is_external for a task no source has (its process
// would fail to load it, be restarted every few seconds and saved to do
// so again after a restart). A refused config is not saved. External
// processes apply what the daemon accepted (they have none). Placement
// keys (host, hosts, placement) must be valid, a placed task cannot be
// external, and its config is accepted once the cluster scope, where its
// queue is, exists on the bus.
func (m *mainRole) checkConfig(name string, cfg map[string]any) error {
	d := m.d
	if why := d.reservedName(name); why != "" {
		return fmt.Errorf("task %s: %s is a reserved name (%s) and cannot be configured", name, name, why)
	}
	if _, placed, err := placement.ParseSpec(name, cfg); err != nil {
		return fmt.Errorf("%w (config not applied)", err)
	} else if placed {
		if host.IsExternal(cfg) {
			return fmt.Errorf("task %s: is_external refused for a placed task (host, hosts or placement): placed tasks run inside the daemon of the box holding them (config not applied)", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), placedScopeWait)
		defer cancel()
		if _, err := m.place.scope(ctx); err != nil {
			return fmt.Errorf("task %s: placed, but its queue cannot be made: %w (config not applied)", name, err)
		}
	}
	if host.IsExternal(cfg) {
		if _, ok := d.host.Lookup(name); !ok {
			return fmt.Errorf("task %s: is_external refused: %w (config not applied)", name, d.notFound(name))
		}
	}
	return nil
}

// notFound is the host's NotFound: the sources searched and the
// namespaces of the registry that have the task but were not given.
func (d *Daemon) notFound(name string) error {
	e := d.srcs.NotFound(name)
	for _, ns := range d.opts.Registry.NamespacesOf(name) {
		if !slices.Contains(e.Searched, ns) {
			e.Elsewhere = append(e.Elsewhere, ns)
		}
	}
	return e
}

// Verdict is the daemon's answer to a control message that asked for one
// (".multimodule": {"reply_to": QUEUE, "id": ID}): sent to QUEUE once the
// message is applied.
type Verdict struct {
	ID     string                 // the sender's id
	OK     bool                   // everything applied, every task configured loaded
	Errors []string               // what was refused, other than per task
	Notes  []string               // what the daemon found to say of an accepted request (nothing to do, say)
	Tasks  map[string]TaskVerdict // per task configured by the message
	// Host and Status answer a control item of type status: the
	// daemon's host scope and every task of its state directory (nil
	// when not asked).
	Host   string
	Status []observe.Task
}

// TaskVerdict is the outcome for one task of a config.
type TaskVerdict struct {
	Verdict string // VerdictAccepted, VerdictRefused or VerdictNotLoaded
	Reason  string // why (refused, not loaded)
}

// The verdicts for one task's config.
const (
	VerdictAccepted  = "accepted"   // recorded and saved; loaded, or runs as its own process
	VerdictRefused   = "refused"    // not applied: the task keeps its previous config
	VerdictNotLoaded = "not_loaded" // recorded and saved, but the task could not be loaded (unknown task, load error)
)

// Message renders v as the reply message.
func (v Verdict) Message() message.Message {
	tasks := map[string]any{}
	for name, tv := range v.Tasks {
		t := map[string]any{"verdict": tv.Verdict}
		if tv.Reason != "" {
			t["reason"] = tv.Reason
		}
		tasks[name] = t
	}
	errs := make([]any, len(v.Errors))
	for i, e := range v.Errors {
		errs[i] = e
	}
	m := message.Message{"id": v.ID, "ok": v.OK, "errors": errs, "tasks": tasks}
	if len(v.Notes) > 0 {
		notes := make([]any, len(v.Notes))
		for i, n := range v.Notes {
			notes[i] = n
		}
		m["notes"] = notes
	}
	if v.Status != nil {
		m["host"] = v.Host
		// The tasks as the HTTP API gives them, as JSON values.
		var status []any
		if b, err := json.Marshal(v.Status); err == nil && json.Unmarshal(b, &status) == nil {
			m["status"] = status
		}
	}
	return m
}

// ParseVerdict reads a reply message.
func ParseVerdict(m message.Message) (Verdict, error) {
	v := Verdict{Tasks: map[string]TaskVerdict{}}
	id, ok := m["id"].(string)
	if !ok {
		return v, errors.New("reply: no id")
	}
	v.ID = id
	v.OK = message.Truthy(m["ok"])
	if list, ok := m["errors"].([]any); ok {
		for _, e := range list {
			v.Errors = append(v.Errors, fmt.Sprint(e))
		}
	}
	if list, ok := m["notes"].([]any); ok {
		for _, n := range list {
			v.Notes = append(v.Notes, fmt.Sprint(n))
		}
	}
	v.Host, _ = m["host"].(string)
	if st, ok := m["status"]; ok {
		b, err := json.Marshal(st)
		if err == nil {
			err = json.Unmarshal(b, &v.Status)
		}
		if err != nil {
			return v, fmt.Errorf("reply: status: %w", err)
		}
	}
	if tasks, ok := m["tasks"].(map[string]any); ok {
		for name, t := range tasks {
			tm, _ := t.(map[string]any)
			verdict, _ := tm["verdict"].(string)
			reason, _ := tm["reason"].(string)
			v.Tasks[name] = TaskVerdict{Verdict: verdict, Reason: reason}
		}
	}
	return v, nil
}

// controlNote is what handleControl says of a control item it accepted
// without doing anything (an unfailsafe of a task that is not
// failsafed): it goes into the verdict's Notes, not its Errors.
type controlNote struct{ text string }

func (n *controlNote) Error() string { return n.text }

// onlyNotes reports whether err holds controlNotes and nothing else.
func onlyNotes(err error) bool {
	var n *controlNote
	if errors.As(err, &n) && n == err {
		return true
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return false
	}
	for _, e := range j.Unwrap() {
		if !onlyNotes(e) {
			return false
		}
	}
	return true
}

// verdict builds the verdict on control message body mm, which
// handleControl answered with err.
func (d *Daemon) verdict(mm map[string]any, err error) Verdict {
	v := Verdict{Tasks: map[string]TaskVerdict{}}
	v.ID, _ = mm["id"].(string)
	perTask := map[string]*host.ConfigError{}
	var walk func(error)
	walk = func(e error) {
		var ce *host.ConfigError
		var n *controlNote
		switch {
		case e == nil:
		case errors.As(e, &ce) && ce == e:
			perTask[ce.Task] = ce
		case errors.As(e, &n) && n == e:
			v.Notes = append(v.Notes, n.text)
		default:
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, sub := range j.Unwrap() {
					walk(sub)
				}
				return
			}
			v.Errors = append(v.Errors, e.Error())
		}
	}
	walk(err)
	cfg, _ := mm["config"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(cfg)) {
		tv := TaskVerdict{Verdict: VerdictAccepted}
		if ce := perTask[name]; ce != nil {
			tv = TaskVerdict{Verdict: VerdictRefused, Reason: ce.Error()}
			if ce.Kept {
				tv = TaskVerdict{Verdict: VerdictNotLoaded, Reason: loadErrorText(ce.Err)}
			}
			delete(perTask, name)
		} else if f, failed := d.host.LoadFailureOf(name); failed {
			tv = TaskVerdict{Verdict: VerdictNotLoaded, Reason: loadErrorText(f.Err)}
		}
		v.Tasks[name] = tv
	}
	for _, name := range slices.Sorted(maps.Keys(perTask)) {
		v.Errors = append(v.Errors, perTask[name].Error())
	}
	v.OK = len(v.Errors) == 0
	for _, tv := range v.Tasks {
		if tv.Verdict != VerdictAccepted {
			v.OK = false
		}
	}
	return v
}

// replyTimeout bounds the sending of a verdict.
const replyTimeout = 10 * time.Second

// reply answers control message m, handled with err, when it asked for
// an answer (reply_to) and its sender still waits (reply_by, unix
// seconds, not passed): a late answer would stay on a queue nobody reads.
//
// The answer goes to reply_to in this box's host scope, or in the host
// scope reply_host names (a command on another box of a NATS cluster);
// status, when not nil, is the daemon's task status the message asked
// for (a control item of type status).
func (d *Daemon) reply(m message.Message, err error, status []observe.Task) {
	mm, _ := m[".multimodule"].(map[string]any)
	to, ok := mm["reply_to"].(string)
	if !ok {
		return
	}
	if by, ok := message.Float(mm["reply_by"]); ok && float64(time.Now().UnixNano())/1e9 > by {
		d.log.Warn("control: the sender stopped waiting for the verdict before it was ready; not replying", "reply_to", to)
		return
	}
	if !isReplyQueue(to) {
		d.host.Out(oob.ChannelError, "main", fmt.Sprintf("control message: reply_to %q is not a reply queue (want %s<id>); no verdict sent", to, ReplyQueuePrefix), nil)
		return
	}
	v := d.verdict(mm, err)
	if status != nil {
		v.Host, v.Status = d.tr.Host(), status
	}
	replyHost, _ := mm["reply_host"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	if err := d.tr.Send(ctx, to, v.Message(), transit.SendOptions{Destination: replyHost}); err != nil {
		d.log.Error("control: send the verdict", "reply_to", to, "reply_host", replyHost, "error", err)
	}
}

// isReplyQueue: a valid queue name with the reply prefix, so that a
// control message cannot make the daemon write into a task's queue.
func isReplyQueue(q string) bool {
	return len(q) > len(ReplyQueuePrefix) && q[:len(ReplyQueuePrefix)] == ReplyQueuePrefix && transit.ValidateQueueName(q) == nil
}

// saveReasons records why configured tasks do not run, for `multimodule
// status` (store.ReasonsFile): the host's load failures (unknown task,
// load error, until the next try) and the externals' restart back-offs.
func (m *mainRole) saveReasons() {
	d := m.d
	reasons := store.Reasons{}
	for name, f := range d.host.LoadFailures() {
		if _, configured := d.host.Config(name); !configured {
			continue
		}
		r := store.Reason{Reason: ReasonLoadError, Until: unixSeconds(f.Next)}
		if f.Err != nil {
			r.Detail = f.Err.Error()
		}
		if why := unknownWhy(f.Err); why != nil {
			r.Reason, r.Detail = ReasonUnknownTask, why.Error()
		}
		reasons[name] = r
	}
	for name, r := range m.ext.reasons() {
		reasons[name] = r
	}
	if err := d.store.SaveReasons(reasons); err != nil {
		d.log.Error("save task reasons", "error", err)
	}
}

// The reasons `status` shows for a configured task that does not run.
const (
	ReasonUnknownTask = "unknown task" // no source has it
	ReasonLoadError   = "load error"   // its load failed; tried again at Until
	ReasonBackOff     = "back-off"     // its external process exited; restarted at Until
)

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// unknownWhy returns, for the host's error for an unknown task, what
// explains it (the sources searched); nil for any other error.
func unknownWhy(err error) error {
	if !errors.Is(err, host.ErrUnknownTask) {
		return nil
	}
	for err != nil {
		j, ok := err.(interface{ Unwrap() []error })
		if !ok {
			err = errors.Unwrap(err)
			continue
		}
		parts := j.Unwrap()
		if len(parts) == 2 && parts[0] == host.ErrUnknownTask {
			return parts[1]
		}
		return err
	}
	return nil
}

// loadErrorText says why a task could not be loaded.
func loadErrorText(err error) string {
	if why := unknownWhy(err); why != nil {
		return ReasonUnknownTask + ": " + why.Error()
	}
	return err.Error()
}
