package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Default timings of the Manager (Options fields, shortened by tests).
const (
	DefaultBoxTTL     = 3 * time.Second
	DefaultBoxRenew   = time.Second
	DefaultLeaseTTL   = 3 * time.Second
	DefaultLeaseRenew = time.Second
	DefaultRetryMin   = 250 * time.Millisecond
	DefaultRetryMax   = time.Second
)

// Options configure a Manager.
type Options struct {
	// JS is the bus's JetStream (transit.Transit.JetStream).
	JS jetstream.JetStream
	// Box is this box's name (its --host; a '.' counts as '_', as in
	// its host scope).
	Box string
	// Replicas is how many servers keep the buckets, when this box
	// creates them (transit.Transit.Replicas).
	Replicas int
	// Runner runs the tasks this box holds.
	Runner Runner
	// Logger (slog.Default when nil).
	Logger *slog.Logger
	// Out reports to the cluster's monitoring: channel "alert" for a
	// placed task that no live box may run. Nil: logged only.
	Out func(channel, task, text string, details map[string]any)

	// BoxTTL is how long this box's key lives in BoxesBucket unless put
	// again, every BoxRenew: a box that stops is gone for the others
	// BoxTTL after its last put.
	BoxTTL, BoxRenew time.Duration
	// LeaseTTL is how long a task's lease lives unless renewed, every
	// LeaseRenew.
	LeaseTTL, LeaseRenew time.Duration
	// RetryMin and RetryMax bound the back-off before this box tries
	// again to take a task whose take-over or start failed.
	RetryMin, RetryMax time.Duration
}

// placedTask is a placed task as the config gives it.
type placedTask struct {
	cfg  map[string]any
	spec Spec
	gen  uint64 // one more at each config change
}

// leaseInfo is a lease as the leases watcher last saw it.
type leaseInfo struct {
	box string
	rev uint64
}

// heldTask is a task this box holds.
type heldTask struct {
	c   *claim
	gen uint64 // the config generation the Runner has
}

// retryState is a task's back-off after a failed take-over or start.
type retryState struct {
	at     time.Time
	wait   time.Duration
	logged time.Time // when a failure of this run was last logged
	quiet  int       // failures not logged since
}

// retryLogEvery is how often a run of failures of one task is logged.
const retryLogEvery = 10 * time.Second

// Manager keeps this box live in the cluster and runs (through the
// Runner) the placed tasks that should run here: it watches the live
// boxes and the leases, and at each change decides for each placed task
// whether this box takes it, keeps it, or hands it on. No message of a
// task passes through it.
type Manager struct {
	opts Options
	log  *slog.Logger
	b    *buckets

	stopLoop context.CancelFunc // ends the decisions and watchers
	stopLife context.CancelFunc // ends the box key's and leases' renewals
	loopCtx  context.Context    // the decisions' context (jobs take over with it)
	lifeCtx  context.Context    // the renewals' context (jobs stop tasks with it)
	kick     chan struct{}
	wg       sync.WaitGroup // loop, watchers, heartbeat, a watch restart
	// ownSeen is when the boxes watch last delivered this box's own key
	// (unix ns): every renewal comes back through it, so a silence longer
	// than the key's TTL while renewals succeed means the watch stalled.
	ownSeen    atomic.Int64
	rewatching atomic.Bool
	watches    *watchGen      // the current watches (m.mu)
	jobs       sync.WaitGroup // take-overs and moves in flight
	boxVal     []byte

	mu      sync.Mutex
	tasks   map[string]*placedTask
	live    map[string]bool
	leases  map[string]leaseInfo
	held    map[string]heldTask
	busy    map[string]bool
	retry   map[string]retryState
	alerted map[string]bool
	closing bool
	twin    bool // another daemon puts this box's key: said once
}

// New opens (creating if missing) the cluster's buckets, puts this box's
// key in BoxesBucket and starts watching the boxes and leases. It
// returns once it has read them all; it runs placed tasks from the first
// SetTasks on. When ctx ends the Manager stops renewing anything and
// leaves its keys to run out, as a box that died would: shut down with
// Close.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.JS == nil {
		return nil, errors.New("placement: new manager: no JetStream")
	}
	if opts.Runner == nil {
		return nil, errors.New("placement: new manager: no Runner")
	}
	if err := checkBox(opts.Box); err != nil {
		return nil, fmt.Errorf("placement: new manager: this box's name: %w", err)
	}
	opts.Box = boxName(opts.Box)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.BoxTTL, DefaultBoxTTL)
	def(&opts.BoxRenew, DefaultBoxRenew)
	def(&opts.LeaseTTL, DefaultLeaseTTL)
	def(&opts.LeaseRenew, DefaultLeaseRenew)
	def(&opts.RetryMin, DefaultRetryMin)
	def(&opts.RetryMax, DefaultRetryMax)
	if opts.BoxRenew >= opts.BoxTTL || opts.LeaseRenew >= opts.LeaseTTL {
		return nil, fmt.Errorf("placement: new manager: renewals (box every %s, lease every %s) must come more often than the TTLs (%s, %s)",
			opts.BoxRenew, opts.LeaseRenew, opts.BoxTTL, opts.LeaseTTL)
	}
	if opts.BoxTTL < time.Second || opts.LeaseTTL < time.Second {
		return nil, fmt.Errorf("placement: new manager: TTLs (box %s, lease %s) must be at least 1s: the server expires keys by the second", opts.BoxTTL, opts.LeaseTTL)
	}
	b, err := openBuckets(ctx, opts.JS, opts.Replicas)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		opts: opts, b: b,
		log:     opts.Logger.With("component", "placement", "box", opts.Box),
		kick:    make(chan struct{}, 1),
		tasks:   map[string]*placedTask{},
		live:    map[string]bool{},
		leases:  map[string]leaseInfo{},
		held:    map[string]heldTask{},
		busy:    map[string]bool{},
		retry:   map[string]retryState{},
		alerted: map[string]bool{},
	}
	m.boxVal, _ = json.Marshal(map[string]any{"box": opts.Box, "started": time.Now().UTC().Format(time.RFC3339Nano)})
	m.lifeCtx, m.stopLife = context.WithCancel(ctx)
	m.loopCtx, m.stopLoop = context.WithCancel(m.lifeCtx)
	if err := m.putBox(ctx); err != nil {
		m.stopLife()
		return nil, fmt.Errorf("placement: new manager: put this box's key in %s: %w", BoxesBucket, err)
	}
	if err := m.startWatches(ctx); err != nil {
		m.stopLife()
		return nil, err
	}
	m.wg.Add(2)
	go m.heartbeat()
	go m.loop()
	return m, nil
}

// watchGen is one start of the boxes' and leases' watches.
type watchGen struct {
	stop context.CancelFunc
	wg   sync.WaitGroup // its two follow goroutines
}

// startWatches watches the boxes and the leases, applying what the
// buckets hold now (forgetting what they no longer hold). The watches it
// replaces end first, so that nothing they still had to deliver lands
// after what the new ones read. ctx bounds the start.
func (m *Manager) startWatches(ctx context.Context) error {
	m.mu.Lock()
	old := m.watches
	m.watches = nil
	m.mu.Unlock()
	if old != nil {
		old.stop()
		old.wg.Wait()
	}
	gen := &watchGen{}
	wctx, stop := context.WithCancel(m.loopCtx)
	gen.stop = stop
	boxes, boxKeys, boxesChanged, err := m.watch(ctx, wctx, m.b.boxes, m.sawBox)
	if err != nil {
		stop()
		return err
	}
	leases, leaseKeys, leasesChanged, err := m.watch(ctx, wctx, m.b.leases, m.sawLease)
	if err != nil {
		stop()
		return err
	}
	m.ownSeen.Store(time.Now().UnixNano())
	m.mu.Lock()
	m.watches = gen
	changed := boxesChanged || leasesChanged
	for box := range m.live {
		if !boxKeys[box] && m.goneLocked(box) {
			changed = true
		}
	}
	for task := range m.leases {
		if !leaseKeys[task] {
			delete(m.leases, task)
			changed = true
		}
	}
	gen.wg.Add(2)
	m.wg.Add(2)
	m.mu.Unlock()
	go m.follow(wctx, gen, boxes, m.sawBox)
	go m.follow(wctx, gen, leases, m.sawLease)
	if changed {
		m.wake()
	}
	return nil
}

// checkWatch starts the watches again when the boxes watch has not
// delivered this box's own key for longer than its TTL although this box
// renews it: the watch stalled (the server that fed it died; the client
// notices only after 10 s without its heartbeats, and its own restart can
// fail while the bucket elects a leader), and this box would not see
// another box die. Called after a successful renewal.
func (m *Manager) checkWatch() {
	silent := time.Since(time.Unix(0, m.ownSeen.Load()))
	if silent <= m.opts.BoxTTL || !m.rewatching.CompareAndSwap(false, true) {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.rewatching.Store(false)
		m.log.Warn("the watch of the boxes stopped delivering this box's own renewals; watching the boxes and leases again",
			"silent_for", silent.Round(time.Millisecond))
		ctx, cancel := context.WithTimeout(m.loopCtx, m.opts.BoxTTL)
		defer cancel()
		if err := m.startWatches(ctx); err != nil && m.loopCtx.Err() == nil {
			m.log.Warn("watching the boxes and leases again failed; trying again after the next renewal", "err", err)
		}
	}()
}

// putBox puts this box's key with its TTL.
func (m *Manager) putBox(ctx context.Context) error {
	actx, cancel := context.WithTimeout(ctx, m.opts.BoxRenew)
	defer cancel()
	_, err := m.opts.JS.PublishMsg(actx, &nats.Msg{Subject: subject(BoxesBucket, m.opts.Box), Data: m.boxVal},
		jetstream.WithMsgTTL(m.opts.BoxTTL))
	return err
}

// heartbeat puts this box's key every BoxRenew.
func (m *Manager) heartbeat() {
	defer m.wg.Done()
	tick := time.NewTicker(m.opts.BoxRenew)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-m.lifeCtx.Done():
			return
		case <-tick.C:
		}
		if err := m.putBox(m.lifeCtx); err != nil && m.lifeCtx.Err() == nil {
			if !failing {
				m.log.Warn("putting this box's key failed: the other boxes count it dead when it runs out", "err", err, "ttl", m.opts.BoxTTL)
			}
			failing = true
		} else if err == nil {
			failing = false
			m.checkWatch()
		}
	}
}

// watch starts watching every key of kv, for as long as wctx lasts, and
// applies what is there now; it returns the watcher, the keys there are
// now, and whether applying them changed something. ctx bounds the start.
func (m *Manager) watch(ctx, wctx context.Context, kv jetstream.KeyValue, saw func(jetstream.KeyValueEntry) bool) (_ jetstream.KeyWatcher, _ map[string]bool, changed bool, _ error) {
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("placement: watch %s: %w", kv.Bucket(), err)
	}
	keys := map[string]bool{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, false, fmt.Errorf("placement: watch %s: the watch ended", kv.Bucket())
			}
			if e == nil {
				return w, keys, changed, nil // all there was
			}
			if e.Operation() == jetstream.KeyValuePut {
				keys[e.Key()] = true
			} else {
				delete(keys, e.Key())
			}
			if saw(e) {
				changed = true
			}
		case <-ctx.Done():
			_ = w.Stop()
			return nil, nil, false, fmt.Errorf("placement: watch %s: %w", kv.Bucket(), context.Cause(ctx))
		}
	}
}

// follow applies the watch's updates until it ends or wctx does, and has
// the loop decide again when one changes something (a renewal does not:
// every box renews its key and leases every second).
func (m *Manager) follow(wctx context.Context, gen *watchGen, w jetstream.KeyWatcher, saw func(jetstream.KeyValueEntry) bool) {
	defer m.wg.Done()
	defer gen.wg.Done()
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil && saw(e) {
				m.wake()
			}
		case <-wctx.Done():
			return
		}
	}
}

// goneLocked forgets box: its key was deleted or ran out. It reports
// whether the box was live. m.mu held.
func (m *Manager) goneLocked(box string) bool {
	if !m.live[box] {
		return false
	}
	if box != m.opts.Box {
		m.log.Info("box gone", "other", box)
	}
	delete(m.live, box)
	return true
}

func (m *Manager) sawBox(e jetstream.KeyValueEntry) (changed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	box := e.Key()
	if box == m.opts.Box && e.Operation() == jetstream.KeyValuePut {
		m.ownSeen.Store(time.Now().UnixNano())
	}
	if e.Operation() != jetstream.KeyValuePut {
		return m.goneLocked(box)
	}
	if box == m.opts.Box && string(e.Value()) != string(m.boxVal) && !m.twin {
		// This box put its key before watching: a later one not its
		// own is another daemon's with the same --host, and the two
		// would take the box's tasks from each other.
		m.twin = true
		text := fmt.Sprintf("another daemon runs as box %s (%s): give each box its own --host", m.opts.Box, e.Value())
		m.log.Error(text)
		if m.opts.Out != nil {
			go m.opts.Out("alert", "", text, map[string]any{"box": m.opts.Box})
		}
	}
	if m.live[box] {
		return false
	}
	if box != m.opts.Box {
		m.log.Info("box live", "other", box)
	}
	m.live[box] = true
	return true
}

func (m *Manager) sawLease(e jetstream.KeyValueEntry) (changed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	task := e.Key()
	old, had := m.leases[task]
	if e.Operation() != jetstream.KeyValuePut {
		delete(m.leases, task)
		return had
	}
	var v leaseValue
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Box == "" {
		// Not a lease this program wrote: treat the key as held by
		// nobody live, so the wanted box deletes it and takes the task.
		m.log.Warn("a lease is not a lease", "task", task, "bucket", LeasesBucket, "revision", e.Revision(), "err", err)
	}
	m.leases[task] = leaseInfo{box: v.Box, rev: e.Revision()}
	return !had || old.box != v.Box
}

// wake makes the loop decide again.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// SetTasks gives the Manager every task of the config (name to config):
// those with placement keys are the placed tasks; the others are not its
// business. A task whose placement keys are wrong keeps its previous
// placement (none if it is new): the error names each. It does not
// block on the bus: the decisions follow. The Manager keeps the config
// maps: do not change them afterwards (give new ones).
//
// Every box should be given the same placed tasks. While their configs
// differ (a config being rolled out), a task stays with the box that
// holds it until that box's config moves it.
func (m *Manager) SetTasks(tasks map[string]map[string]any) error {
	var errs []error
	m.mu.Lock()
	next := map[string]*placedTask{}
	for name, cfg := range tasks {
		spec, placed, err := ParseSpec(name, cfg)
		if err != nil {
			errs = append(errs, err)
			if old := m.tasks[name]; old != nil {
				next[name] = old
			}
			continue
		}
		if !placed {
			continue
		}
		if !validKey(name) {
			errs = append(errs, fmt.Errorf("task %s: a placed task's name cannot begin or end with '.'", name))
			continue
		}
		p := m.tasks[name]
		if p == nil {
			p = &placedTask{}
		}
		if p.gen == 0 || !reflect.DeepEqual(p.cfg, cfg) {
			p = &placedTask{cfg: cfg, spec: spec, gen: p.gen + 1}
			delete(m.alerted, name)
		}
		next[name] = p
	}
	m.tasks = next
	for name := range m.alerted {
		if next[name] == nil {
			delete(m.alerted, name)
		}
	}
	for name := range m.retry {
		if next[name] == nil {
			delete(m.retry, name)
		}
	}
	m.mu.Unlock()
	m.wake()
	return errors.Join(errs...)
}

// loop decides again at each change, and when a back-off ends.
func (m *Manager) loop() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-m.loopCtx.Done():
			return
		case <-m.kick:
		case <-timer.C:
		}
		if next := m.decide(); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// configure is a config change for a task running here.
type configure struct {
	name string
	cfg  map[string]any
	gen  uint64
	c    *claim
}

// decide looks at every placed task and every task held here, starts a
// take-over or a move where one is due, and passes config changes to
// the Runner. It returns when the next back-off ends (zero: none).
func (m *Manager) decide() time.Time {
	var (
		next   time.Time
		config []configure
		alerts []func()
	)
	now := time.Now()
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return next
	}
	live := m.liveBoxes()
	me := m.opts.Box
	for _, name := range m.names() {
		if m.busy[name] {
			continue
		}
		p := m.tasks[name]
		h, holding := m.held[name]
		var (
			want string
			ok   bool
		)
		if p != nil {
			want, ok = p.spec.Choose(name, live)
		}
		if holding {
			switch {
			case p == nil:
				m.startJob(name, func() { m.move(name, h.c, "no longer in the config") })
			case !ok:
				m.startJob(name, func() { m.move(name, h.c, "it may not run on this box") })
			case want != me:
				m.startJob(name, func() { m.move(name, h.c, "it should run on box "+want) })
			case h.gen != p.gen:
				config = append(config, configure{name, p.cfg, p.gen, h.c})
			}
			continue
		}
		if p == nil {
			continue
		}
		if !ok {
			if !m.alerted[name] {
				m.alerted[name] = true
				if first, _ := rendezvous(name, live); first == me {
					alerts = append(alerts, m.alertNoBox(name, p.spec))
				}
			}
			continue
		}
		delete(m.alerted, name)
		if want != me {
			continue
		}
		if r, ok := m.retry[name]; ok && now.Before(r.at) {
			if next.IsZero() || r.at.Before(next) {
				next = r.at
			}
			continue
		}
		l, leased := m.leases[name]
		if leased && l.box != me && m.live[l.box] {
			continue // a live box holds it: it hands it on (a move) or loses it
		}
		var stale *leaseInfo
		if leased {
			stale = &l // its box is gone, or it is this box's from before a restart
		}
		cfg, gen := p.cfg, p.gen
		m.startJob(name, func() { m.takeOver(name, cfg, gen, stale) })
	}
	m.mu.Unlock()
	for _, a := range alerts {
		a()
	}
	for _, c := range config {
		if err := m.opts.Runner.Configure(c.name, c.cfg); err != nil {
			m.log.Error("configuring a placed task failed", "task", c.name, "err", err)
		}
		m.mu.Lock()
		if h, ok := m.held[c.name]; ok && h.c == c.c {
			h.gen = c.gen
			m.held[c.name] = h
		}
		m.mu.Unlock()
	}
	return next
}

// Live is the boxes this box sees live (itself among them), sorted.
func (m *Manager) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.liveBoxes()
}

// liveBoxes is the live boxes, this one always among them (m.mu held).
func (m *Manager) liveBoxes() []string {
	live := slices.Collect(maps.Keys(m.live))
	if !m.live[m.opts.Box] {
		live = append(live, m.opts.Box)
	}
	slices.Sort(live)
	return live
}

// names is every placed task and every task held here, sorted (m.mu
// held).
func (m *Manager) names() []string {
	names := slices.Collect(maps.Keys(m.tasks))
	for name := range m.held {
		if m.tasks[name] == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// startJob runs a take-over or move of task name in the background,
// marking the task busy until it ends (m.mu held).
func (m *Manager) startJob(name string, job func()) {
	m.busy[name] = true
	m.jobs.Add(1)
	go func() {
		defer m.jobs.Done()
		job()
		m.mu.Lock()
		delete(m.busy, name)
		m.mu.Unlock()
		m.wake()
	}()
}

// alertNoBox is the alert that task cannot run on any live box (m.mu
// held; the returned function sends it).
func (m *Manager) alertNoBox(task string, s Spec) func() {
	var text string
	if s.Kind == Pinned {
		text = fmt.Sprintf("task %s is pinned to box %s, which is not live: its messages wait", task, s.Hosts[0])
	} else {
		text = fmt.Sprintf("task %s may run only on boxes %s, none of which is live: its messages wait", task, strings.Join(s.Hosts, ", "))
	}
	details := map[string]any{"boxes": slices.Clone(s.Hosts)}
	return func() {
		m.log.Warn(text, "task", task)
		if m.opts.Out != nil {
			m.opts.Out("alert", task, text, details)
		}
	}
}

// takeOver takes task name: deletes a stale lease (of a box that is
// gone, or of this box before a restart), creates the lease, fences the
// checkpoint and starts the task.
func (m *Manager) takeOver(name string, cfg map[string]any, gen uint64, stale *leaseInfo) {
	ctx := m.loopCtx
	from := ""
	if stale != nil {
		from = stale.box
		err := m.b.leases.Delete(ctx, name, jetstream.LastRevision(stale.rev))
		if err != nil && !wrongRevision(err) {
			m.failed(name, fmt.Errorf("placement: task %s: delete the lease of box %s: %w", name, stale.box, err))
			return
		}
	}
	c, err := take(ctx, m.lifeCtx, m.b, m.opts.JS, m.opts.Box, name,
		takeTimings{leaseTTL: m.opts.LeaseTTL, leaseRenew: m.opts.LeaseRenew}, m.log, m.lost)
	if errors.Is(err, errHeld) {
		return // another box was quicker: the leases watcher says which
	}
	if err != nil {
		m.failed(name, err)
		return
	}
	m.mu.Lock()
	m.held[name] = heldTask{c: c, gen: gen}
	m.mu.Unlock()
	started := time.Now()
	// The task's start may outlast the decisions (Close ends those first,
	// then stops the tasks): it gets the renewals' context.
	if err := m.opts.Runner.Start(m.lifeCtx, name, cfg, c); err != nil {
		m.mu.Lock()
		if m.held[name].c == c {
			delete(m.held, name)
		}
		m.mu.Unlock()
		c.release(context.WithoutCancel(ctx))
		m.failed(name, fmt.Errorf("placement: task %s: start: %w", name, err))
		return
	}
	m.mu.Lock()
	delete(m.retry, name)
	m.mu.Unlock()
	m.log.Info("took a placed task", "task", name, "epoch", c.cp.Epoch, "previous_holder", c.prevHolder, "stale_lease_of", from,
		"position", c.cp.Position, "start_took", time.Since(started).Round(time.Millisecond))
}

// failed backs task name off after a failed take-over or start.
func (m *Manager) failed(name string, err error) {
	if m.loopCtx.Err() != nil {
		return
	}
	now := time.Now()
	m.mu.Lock()
	r, again := m.retry[name]
	r.wait = min(max(2*r.wait, m.opts.RetryMin), m.opts.RetryMax)
	r.at = now.Add(r.wait)
	logIt, quiet := now.Sub(r.logged) >= retryLogEvery, r.quiet
	if logIt {
		r.logged, r.quiet = now, 0
	} else {
		r.quiet++
	}
	m.retry[name] = r
	m.mu.Unlock()
	if logIt {
		// The bus is often the cause (a bucket electing a leader): tried
		// every second meanwhile, logged every retryLogEvery.
		m.log.Error("taking a placed task failed; trying again", "task", name, "err", err, "retry_in", r.wait, "failures_not_logged", quiet)
	}
	if !again && m.opts.Out != nil {
		// Once per run of failures; the log has each one.
		m.opts.Out("alert", name, fmt.Sprintf("task %s could not be taken over or started on box %s: %v; trying again", name, m.opts.Box, err),
			map[string]any{"box": m.opts.Box})
	}
}

// lost forgets a task whose claim was lost (the Runner stops it), and
// backs off for a renewal period so the Runner has stopped it before
// this box might take it again.
func (m *Manager) lost(c *claim) {
	m.mu.Lock()
	if m.held[c.task].c == c {
		delete(m.held, c.task)
		m.retry[c.task] = retryState{at: time.Now().Add(m.opts.LeaseRenew), wait: m.opts.RetryMin}
	}
	m.mu.Unlock()
	m.wake()
}

// move hands task name on: the Runner stops it (saving its last
// checkpoint), then the lease is released so the box it should run on
// takes it at once.
func (m *Manager) move(name string, c *claim, why string) {
	start := time.Now()
	if err := m.opts.Runner.Stop(m.lifeCtx, name); err != nil {
		m.log.Error("stopping a placed task to hand it on failed; releasing it all the same", "task", name, "err", err)
	}
	c.release(context.WithoutCancel(m.lifeCtx))
	m.mu.Lock()
	if m.held[name].c == c {
		delete(m.held, name)
	}
	m.mu.Unlock()
	m.log.Info("handed a placed task on", "task", name, "why", why, "took", time.Since(start).Round(time.Millisecond))
}

// Close stops every task this box runs (the Runner saves each one's
// last checkpoint), releases their leases and deletes this box's key,
// so that the other boxes take the tasks at once.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	m.mu.Unlock()
	m.stopLoop()
	m.jobs.Wait()
	m.mu.Lock()
	held := maps.Clone(m.held)
	clear(m.held)
	m.mu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(held)) {
		if err := m.opts.Runner.Stop(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("placement: stop task %s: %w", name, err))
		}
		held[name].c.release(ctx)
	}
	m.stopLife()
	m.wg.Wait()
	if err := m.b.boxes.Delete(ctx, m.opts.Box); err != nil {
		errs = append(errs, fmt.Errorf("placement: delete this box's key: %w", err))
	}
	return errors.Join(errs...)
}
