package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/oob"
	"github.com/multimodule/multimodule/supervise"
	"github.com/multimodule/multimodule/transit"
)

// Poison messages: a message that kills the external process handling it.
//
// The external marks, in <state>/<Task>.inflight (a supervise.InFlight:
// a mapped file, one memory store per message), which message of its
// task's bus queue it is handling. When the process dies without being
// asked to, the daemon reads the marker: if a message was being handled,
// it records the crash in <state>/<Task>.crash — the message's position
// (bus sequence and member), how many crashes in a row it was in flight
// at, the exit status, and the verdict: once that count is above the
// task's max_crash_redeliveries, the next process moves the message to
// the dead-letter queue when it comes again, instead of handling it.
// Redeliveries for other reasons (a daemon restart, a migration, the ack
// wait) are not crashes of the external and count nothing.
//
// The restarts such a message causes do not count toward the start-rate
// failsafe (local.admin.start.external) when the message is dead-lettered
// and the task had handled some message between the crash before and the
// message's first crash: a restart after a crash with a message in flight
// is held back; it is counted once the task got past that message (the
// marker shows a later one, or the process dies without it in flight),
// and not at all (counted as local.admin.start.external.poison instead)
// when the message turns out to be dead-lettered. A task that crashes on
// every message gets nothing done in between: its restarts count, and
// the monitor failsafes it as any crash loop.

// MetricStartPoison counts the external starts that followed a crash
// caused by a message that was then dead-lettered: they are not counted
// in local.admin.start.external (no default thresholds: never alerted).
const MetricStartPoison = "local.admin.start.external.poison"

// crashRecord is <Task>.crash: the message of the task's queue that was
// in flight at the latest crashes of its external process, and the
// messages that killed it too often (Dead).
type crashRecord struct {
	// The suspect: in flight at the latest Crashes crashes in a row.
	Seq        uint64  `json:"seq"`    // the bus sequence of the message
	Member     int     `json:"member"` // its place in its bus message (0-based)
	Crashes    int     `json:"crashes"`
	ExitStatus string  `json:"exit_status"` // of the latest crash
	PID        int     `json:"pid"`
	Time       float64 `json:"time"`
	// Progress: the task had handled a message since the crash before the
	// suspect's first one (else it is crash-looping, not poisoned, and
	// its restarts count toward the failsafe even if the suspect is
	// dead-lettered).
	Progress bool `json:"progress"`
	// Handled is the marker's count of handled messages at the latest
	// crash.
	Handled uint64 `json:"handled"`
	// Dead: the messages to dead-letter when they come again, the
	// latest last (at most maxDeadVerdicts).
	Dead []deadVerdict `json:"dead,omitempty"`
}

// deadVerdict is a message that killed the task's process more than its
// max_crash_redeliveries allow.
type deadVerdict struct {
	Seq                  uint64 `json:"seq"`
	Member               int    `json:"member"`
	Crashes              int    `json:"crashes"`
	ExitStatus           string `json:"exit_status"`
	MaxCrashRedeliveries int    `json:"max_crash_redeliveries"`
	// Done: a later process got past it (it is in the dead-letter
	// queue); if its bus message comes again, it is skipped.
	Done bool `json:"done"`
}

// maxDeadVerdicts bounds crashRecord.Dead: a bus message comes again only
// until it is acknowledged, soon after the process that got past it.
const maxDeadVerdicts = 64

func (r crashRecord) pos() msgPos { return msgPos{r.Seq, r.Member} }
func (v deadVerdict) pos() msgPos { return msgPos{v.Seq, v.Member} }

// crashVerdict is what a crash means for the message in flight.
type crashVerdict struct {
	pos        msgPos
	crashes    int
	deadLetter bool
	forgive    bool // deadLetter, and its restarts are not counted
}

// msgPos names a queue message: the bus message's sequence and its
// member, in queue order.
type msgPos struct {
	seq    uint64
	member int
}

func (p msgPos) after(q msgPos) bool {
	return p.seq > q.seq || (p.seq == q.seq && p.member > q.member)
}

func inFlightPath(dir, name string) string { return filepath.Join(dir, name+".inflight") }
func crashPath(dir, name string) string    { return filepath.Join(dir, name+".crash") }

// loadCrashRecord reads <Task>.crash; a missing one is nil.
func loadCrashRecord(dir, name string) (*crashRecord, error) {
	b, err := os.ReadFile(crashPath(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r crashRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", crashPath(dir, name), err)
	}
	return &r, nil
}

// saveCrashRecord writes <Task>.crash atomically (a crash, never a
// message, writes it).
func saveCrashRecord(dir, name string, r crashRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := crashPath(dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// exitStatus describes how p ended, for crash records and dead letters.
func exitStatus(p *supervise.Process) string {
	code, signaled, known := p.ExitStatus()
	switch {
	case known && signaled:
		return fmt.Sprintf("killed by signal %d", code)
	case known:
		return fmt.Sprintf("exit status %d", code)
	}
	return "exit status unknown (a process adopted from an earlier daemon)"
}

// recordCrash notes that the external process of name (pid) died
// without being asked to (how: its exit status). It returns what that
// means for the message being handled then, or nil when none was.
func (x *externals) recordCrash(name, how string, pid int) *crashVerdict {
	dir := x.d.store.Dir()
	mark, err := supervise.ReadInFlight(inFlightPath(dir, name))
	if err != nil {
		x.d.log.Warn("externals: read the in-flight marker", "task", name, "error", err)
		return nil
	}
	rec, err := loadCrashRecord(dir, name)
	if err != nil {
		x.d.log.Warn("externals: read the crash record (starting a new one)", "task", name, "error", err)
	}
	if rec == nil {
		rec = &crashRecord{}
	}
	// The messages the process got past were dead-lettered by it.
	at := msgPos{mark.Seq, mark.Member}
	changed := false
	for i := range rec.Dead {
		v := &rec.Dead[i]
		if !v.Done && (at.after(v.pos()) || (at == v.pos() && mark.State == supervise.InFlightDone)) {
			v.Done, changed = true, true
		}
	}
	var verdict *crashVerdict
	progress := mark.Handled > rec.Handled
	if mark.Handled != rec.Handled {
		rec.Handled, changed = mark.Handled, true
	}
	if mark.Handling() {
		if rec.pos() == at && rec.Crashes > 0 {
			rec.Crashes++
		} else {
			rec.Seq, rec.Member, rec.Crashes, rec.Progress = at.seq, at.member, 1, progress
		}
		rec.ExitStatus, rec.PID = how, pid
		rec.Time = float64(time.Now().UnixNano()) / 1e9
		cfg, _ := x.d.host.Config(name)
		limit := host.MaxCrashRedeliveries(cfg)
		verdict = &crashVerdict{pos: at, crashes: rec.Crashes, deadLetter: rec.Crashes > limit}
		verdict.forgive = verdict.deadLetter && rec.Progress
		if verdict.deadLetter {
			rec.Dead = append(rec.Dead, deadVerdict{Seq: at.seq, Member: at.member, Crashes: rec.Crashes, ExitStatus: how, MaxCrashRedeliveries: limit})
			if n := len(rec.Dead); n > maxDeadVerdicts {
				rec.Dead = append(rec.Dead[:0], rec.Dead[n-maxDeadVerdicts:]...)
			}
		}
		changed = true
	}
	if !changed {
		return nil
	}
	if err := saveCrashRecord(dir, name, *rec); err != nil {
		x.d.host.Out(oob.ChannelError, name, fmt.Sprintf("recording the crash of %s: %v (the message it was handling is not counted as a poison message)", name, err), nil)
		return nil
	}
	if verdict != nil {
		if err := supervise.MarkInFlightRecorded(inFlightPath(dir, name)); err != nil {
			x.d.log.Warn("externals: mark the in-flight marker recorded", "task", name, "error", err)
		}
	}
	return verdict
}

// recordUnwatchedCrash records the crash of an external process that
// died while no daemon watched it (its marker still says it was handling
// a message, and no process holds its lock), before a new one starts.
func (x *externals) recordUnwatchedCrash(name string) {
	mark, err := supervise.ReadInFlight(inFlightPath(x.d.store.Dir(), name))
	if err != nil || !mark.Handling() {
		return
	}
	release, err := x.d.store.LockExternal(name)
	if err != nil {
		return // a process of the task runs (or the lock cannot be had): nothing to record
	}
	_ = release()
	rec := x.recordCrash(name, "exit status unknown (it died while no daemon watched it)", 0)
	x.mu.Lock()
	x.planRestartLocked(name, rec)
	x.mu.Unlock()
}

// forgetInFlight marks a message in flight at an exit the daemon asked
// for (a stop, a failsafe) as recorded without counting it: such a death
// is no crash.
func (x *externals) forgetInFlight(name string) {
	path := inFlightPath(x.d.store.Dir(), name)
	if mark, err := supervise.ReadInFlight(path); err == nil && mark.Handling() {
		_ = supervise.MarkInFlightRecorded(path)
	}
}

// heldStarts are restarts of an external not counted yet: they followed
// crashes at which the message at pos was in flight, and it may yet be
// dead-lettered.
type heldStarts struct {
	pos msgPos
	n   uint64
}

// startKind says how the next start of an external is counted.
type startKind int

const (
	startCounted  startKind = iota // local.admin.start.external
	startHeld                      // held until the message in flight at the crash is passed
	startForgiven                  // the message is dead-lettered: local.admin.start.external.poison
)

// planRestart decides, after a crash, how the next start is counted.
// x.mu held.
func (x *externals) planRestartLocked(name string, rec *crashVerdict) {
	counters := x.d.host.Counters()
	h := x.held[name]
	switch {
	case rec == nil:
		// Nothing in flight: whatever was held was passed.
		x.releaseLocked(name)
		x.nextStart[name] = startNext{kind: startCounted}
	case rec.deadLetter && !rec.forgive:
		// Dead-lettered, but the task got nothing done before it:
		// a crash loop, counted.
		x.releaseLocked(name)
		x.nextStart[name] = startNext{kind: startCounted}
	case rec.deadLetter:
		if h != nil && h.pos == rec.pos {
			counters.Add(name, MetricStartPoison, h.n)
			delete(x.held, name)
		} else {
			x.releaseLocked(name)
		}
		x.nextStart[name] = startNext{kind: startForgiven}
	default:
		if h != nil && h.pos != rec.pos {
			x.releaseLocked(name)
		}
		x.nextStart[name] = startNext{kind: startHeld, pos: rec.pos}
	}
}

type startNext struct {
	kind startKind
	pos  msgPos
}

// countStart counts a start of name's external as planned. x.mu held.
func (x *externals) countStartLocked(name string) {
	next := x.nextStart[name]
	delete(x.nextStart, name)
	counters := x.d.host.Counters()
	switch next.kind {
	case startForgiven:
		counters.Add(name, MetricStartPoison, 1)
	case startHeld:
		h := x.held[name]
		if h == nil || h.pos != next.pos {
			x.releaseLocked(name)
			h = &heldStarts{pos: next.pos}
			x.held[name] = h
		}
		h.n++
	default:
		counters.Add(name, host.MetricStartExternal, 1)
	}
}

// releaseLocked counts the held restarts of name: its process got past
// the message (or the task moved on). x.mu held.
func (x *externals) releaseLocked(name string) {
	if h := x.held[name]; h != nil {
		x.d.host.Counters().Add(name, host.MetricStartExternal, h.n)
		delete(x.held, name)
	}
}

// releasePassed counts the held restarts of the tasks whose process has
// handled the message they were held for (its marker shows it done, or a
// later one). Run from the safety pass: one small read per held task.
func (x *externals) releasePassed() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, h := range x.held {
		mark, err := supervise.ReadInFlight(inFlightPath(x.d.store.Dir(), name))
		if err != nil {
			continue
		}
		pos := msgPos{mark.Seq, mark.Member}
		if pos.after(h.pos) || (pos == h.pos && mark.State == supervise.InFlightDone) {
			x.releaseLocked(name)
		}
	}
}

// externalInFlight is the host.InFlight of an external process: it keeps
// the marker current and dead-letters the messages its crash record says
// killed the task too often (skipping those a previous process
// dead-lettered already).
type externalInFlight struct {
	mark *supervise.InFlight
	task string
	// The verdicts of the crash record, by message; nil once the queue
	// is past the last of them (maxSeq), so that a message costs one
	// comparison.
	dead   map[msgPos]deadVerdict
	maxSeq uint64
}

// openExternalInFlight maps the marker of task and reads its crash
// record.
func openExternalInFlight(dir, task string) (*externalInFlight, error) {
	m, err := supervise.OpenInFlight(inFlightPath(dir, task))
	if err != nil {
		return nil, err
	}
	f := &externalInFlight{mark: m, task: task}
	rec, err := loadCrashRecord(dir, task)
	if err != nil {
		// Without it a poison message comes again: one crash more.
		return f, fmt.Errorf("crash record: %w", err)
	}
	if rec != nil && len(rec.Dead) > 0 {
		f.dead = make(map[msgPos]deadVerdict, len(rec.Dead))
		for _, v := range rec.Dead {
			f.dead[v.pos()] = v
			f.maxSeq = max(f.maxSeq, v.Seq)
		}
	}
	return f, nil
}

func (f *externalInFlight) Begin(d *transit.Delivery) host.Verdict {
	if f.dead != nil {
		if d.Seq > f.maxSeq {
			f.dead = nil
		} else if v, ok := f.dead[msgPos{d.Seq, d.Member()}]; ok {
			// Marked as being handled until it is in the dead-letter
			// queue: a crash on the way counts as one more at it.
			f.mark.Begin(d.Seq, d.Member())
			if v.Done {
				return host.Verdict{Skip: true}
			}
			return host.Verdict{
				DeadLetter: fmt.Sprintf("the external process of %s died %d times while handling it, the last time %s (max_crash_redeliveries %d)",
					f.task, v.Crashes, v.ExitStatus, v.MaxCrashRedeliveries),
				Details: map[string]any{
					"task":                   f.task,
					"crashes":                int64(v.Crashes),
					"exit_status":            v.ExitStatus,
					"max_crash_redeliveries": int64(v.MaxCrashRedeliveries),
				},
			}
		}
	}
	f.mark.Begin(d.Seq, d.Member())
	return host.Verdict{}
}

func (f *externalInFlight) End(handled bool) {
	if handled {
		f.mark.End()
	} else {
		f.mark.Pass()
	}
}
