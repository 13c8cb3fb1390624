package transit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/multimodule/multimodule/message"
)

// Options configure [Open]. The zero value of every field has a usable
// default, except that either NATSURL or StateDir/TransportDir is needed.
type Options struct {
	// StateDir is the state directory; the embedded bus lives under
	// TransportDir, or <StateDir>/transit when TransportDir is empty.
	StateDir string
	// TransportDir is where the embedded bus keeps bus.json, token,
	// bus.log, its lock files and the JetStream store.
	TransportDir string
	// NATSURL, when non-empty, is the NATS server or cluster to use
	// (comma-separated URLs); nothing is started.
	NATSURL string
	// NATSOptions are extra connection options (credentials, TLS, …)
	// for NATSURL.
	NATSOptions []nats.Option
	// Host is this box's host name (see ValidateHost; Open refuses an
	// invalid one); its host scope is the name with '.' replaced by '_'.
	// Default: os.Hostname() with every character other than letters,
	// digits, '_' and '-' replaced by '_', cut to 64 characters
	// ("localhost" when it is empty). Open creates
	// the host scope's stream if it does not exist: a host's queues
	// exist once a process of that host opened the bus.
	Host string
	// SubjectPrefix is the first subject token of every queue subject;
	// default "mm".
	SubjectPrefix string
	// NoStartBus makes Open (and every reconnect) only find a running
	// embedded bus, never start one: without one, Open fails with
	// ErrNoBus and creates nothing. Commands that only look (status,
	// queues, recv) set it.
	NoStartBus bool
	// NoCreate makes Open create nothing on the bus: the host scope's
	// stream must exist (ErrUnknownHost otherwise). Commands that only
	// look (status, queues) set it, so that looking at a host (--host)
	// that never opened the bus does not create its scope.
	NoCreate bool
	// BusCommand is the argv that starts the embedded bus; default
	// {os.Executable(), "bus", "-T", <transport dir>}.
	BusCommand []string
	// Capacity is the per-queue capacity of the host scopes this Transit
	// creates (see Capacity).
	Capacity Capacity
	// Replicas is how many servers of a NATS cluster keep a copy of the
	// host scope stream this Transit creates (every queue of the scope,
	// its dead-letter queue included; the queues' consumers follow the
	// stream); an existing stream keeps its count. Zero means 1. More than 1 needs NATSURL (the embedded
	// bus is one server) and at least that many JetStream servers in the
	// cluster; JetStream allows at most 5.
	Replicas int
	// AckWait is how long the bus waits for an acknowledgement before it
	// redelivers; default 5s. A live Consumer keeps its unacknowledged
	// deliveries alive, so this only matters for stalled processes.
	AckWait time.Duration
	// MaxDeliver is the number of deliveries that never completed after
	// which a message moves to DeadLetterQueue; default 5.
	MaxDeliver int
	// FullWait bounds how long an asynchronous send (SendAsync, and so
	// every task's send through a host) waits for room in a full bus
	// queue: its bus message is published again until the queue takes it,
	// for at most FullWait from when this process found the queue full;
	// then it, and every later send that finds the queue still full, moves
	// to DeadLetterQueue with the target queue and the reason, until a
	// send to the queue is stored again. Flush waits for either outcome.
	// Default 5s.
	FullWait time.Duration

	// OwnerCountsCrashes: the owners of queues in this process find the
	// message that was being handled when an owner died themselves (an
	// external process: see Delivery.DeadLetter), so a take-over does not
	// count the previous owner's death against the first message it
	// delivers again (which may be an innocent one whose acknowledgement
	// had not gone out yet), and never dead-letters it for that.
	OwnerCountsCrashes bool
	// Logger receives the package's logs; nil means slog.Default().
	Logger *slog.Logger
}

// MaxReplicas is the most replicas a JetStream stream can have.
const MaxReplicas = 5

// Capacity bounds a queue. On the bus, Msgs is enforced per queue by the
// server (a send to a full queue fails, or waits for room); Bytes bounds
// the whole host scope's stream (JetStream has no per-subject byte limit)
// and is reported per queue for the fullness metric. Both apply when the
// host scope's stream is created; an existing stream keeps its limits.
// Msgs zero means DefaultCapacity.Msgs. Bytes zero means: sized here,
// DefaultCapacity.Bytes but at most half of the space free on the
// transport directory's file system (embedded bus), halved while the bus
// cannot reserve it, down to MinStreamBytes.
type Capacity struct {
	Msgs  int64
	Bytes int64
}

// DefaultCapacity is the per-queue capacity when Options.Capacity is
// zero (Bytes: at most, see Capacity).
var DefaultCapacity = Capacity{Msgs: 1_000_000, Bytes: 8 << 30}

// QueueStat describes a queue. Msgs counts messages waiting (on the bus:
// stored and not yet acknowledged, including those an owner is handling;
// a batch of several messages sent together counts once, as the bus
// stores it and as Capacity.Msgs limits it, see BatchHeader).
// Bytes is exact for local queues' count-only view (0: nothing is
// serialized) and, on the bus, the waiting messages times the average
// stored message size of the host scope's stream (JetStream keeps byte
// counts per stream, not per subject).
type QueueStat struct {
	Name     string
	Msgs     int64
	Bytes    int64
	Capacity Capacity
	Local    bool // hosted in this process (a Local queue)
}

// SendOptions modify one send.
type SendOptions struct {
	// Destination delivers to queue qname of that host ("" or this box's
	// own host means here). It must be a valid host name (ValidateHost)
	// whose host scope exists on the bus (ErrUnknownHost otherwise): a
	// send never creates another host's scope. A send with a foreign
	// Destination always goes through the bus.
	Destination string
	// NonBlocking makes a send to a full queue fail at once with ErrFull
	// instead of waiting for room (bounded by the context).
	NonBlocking bool
}

// Transit is a process's handle on its queues: the local ones it hosts
// and the shared bus. It is safe for concurrent use.
type Transit struct {
	opts Options
	log  *slog.Logger
	host string
	bus  backend

	mu sync.RWMutex
	// locals is copy-on-write: senders read it without a lock;
	// InProcess.Host, InProcess.Unhost and Close replace it under mu.
	locals atomic.Pointer[map[string]*Local]
	closed atomic.Bool
	clock  sendClock
}

// Open connects to the bus (with no NATSURL: the embedded bus under the
// transport directory, started if it is not running) and returns a
// Transit. ctx bounds the connection and bus start-up only.
func Open(ctx context.Context, opts Options) (*Transit, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Host == "" {
		opts.Host = defaultHost()
	} else {
		if err := ValidateHost(opts.Host); err != nil {
			return nil, fmt.Errorf("transit: open: this box's host: %w", err)
		}
		opts.Host = hostScope(opts.Host)
	}
	if opts.SubjectPrefix == "" {
		opts.SubjectPrefix = "mm"
	}
	if opts.Capacity.Msgs <= 0 {
		opts.Capacity.Msgs = DefaultCapacity.Msgs
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 5 * time.Second
	}
	if opts.MaxDeliver <= 0 {
		opts.MaxDeliver = 5
	}
	if opts.FullWait <= 0 {
		opts.FullWait = 5 * time.Second
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Replicas > 1 && opts.NATSURL == "" {
		return nil, fmt.Errorf("transit: open: %d replicas need a NATS cluster (NATSURL): the embedded bus is a single server", opts.Replicas)
	}
	if opts.Replicas > MaxReplicas {
		return nil, fmt.Errorf("transit: open: %d replicas: JetStream keeps at most %d", opts.Replicas, MaxReplicas)
	}
	if opts.NATSURL == "" && opts.TransportDir == "" {
		if opts.StateDir == "" {
			return nil, errors.New("transit: open: no NATS URL and no state or transport directory to find the embedded bus in")
		}
		opts.TransportDir = filepath.Join(opts.StateDir, "transit")
	}
	t := &Transit{
		opts: opts,
		log:  opts.Logger.With("component", "transit"),
		host: opts.Host,
	}
	t.locals.Store(&map[string]*Local{})
	b, err := openNATS(ctx, &t.opts, t.log)
	if err != nil {
		return nil, err
	}
	t.bus = b
	return t, nil
}

// Close flushes pending publishes, stops every consumer and disconnects.
// Local queues are unhosted (their waiting messages are dropped: unhost
// them first to keep them). It is safe to call twice.
func (t *Transit) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	t.mu.Lock()
	locals := *t.locals.Load()
	t.locals.Store(&map[string]*Local{})
	t.mu.Unlock()
	for _, l := range locals {
		if msgs, _ := l.unhost(); len(msgs) > 0 {
			n := len(msgs)
			t.log.Warn("closing with messages in a local queue", "queue", l.name, "dropped", n)
		}
	}
	return t.bus.close()
}

// StartedBus returns the pid of the embedded bus this Transit started
// (at Open or on a reconnect) and saw ready, or 0 when it started none
// (the bus was already running, or NATSURL is set).
func (t *Transit) StartedBus() int {
	if nb, ok := t.bus.(*natsBus); ok && nb.starter != nil {
		return int(nb.starter.started.Load())
	}
	return 0
}

// HostName returns this box's host scope.
func (t *Transit) HostName() string { return t.host }

func (t *Transit) local(qname string) *Local {
	return (*t.locals.Load())[qname]
}

// Send delivers msg to queue qname. It validates the name and the message
// (a JSON-compatible map; at most MaxMessageBytes encoded for the bus),
// records .ipc_transit_meta.send_ts, and applies the per-message overrides
// of queue names. A queue hosted in this process gets msg itself (the callee
// owns it after Send); otherwise msg is published to the bus and Send
// returns once the bus stored it. A full queue makes Send wait for room
// until ctx ends, or fail at once with ErrFull when opts.NonBlocking.
func (t *Transit) Send(ctx context.Context, qname string, msg message.Message, opts SendOptions) error {
	_, err := t.send(ctx, qname, msg, nil, HostSendOptions{SendOptions: opts}, true)
	return err
}

// SendAsync is Send, except that a bus publish returns before the bus
// acknowledged it: publishes are pipelined and their outcome is reported
// by Flush (and logged). A full bus queue is reported by Flush as well.
// Messages to one queue that come while an earlier one is on its way
// travel together, in one bus message (see BatchHeader); a lone message
// goes out at once. When too many messages are accepted and not yet
// stored (32,768), SendAsync waits for room until ctx ends (also with
// NonBlocking, which is about the queue's capacity). The local path is
// the same as Send's.
func (t *Transit) SendAsync(ctx context.Context, qname string, msg message.Message, opts SendOptions) error {
	_, err := t.send(ctx, qname, msg, nil, HostSendOptions{SendOptions: opts}, false)
	return err
}

// Flush waits until every SendAsync so far has been stored by the bus and
// returns the errors of those that failed since the previous Flush.
func (t *Transit) Flush(ctx context.Context) error {
	if t.closed.Load() {
		return fmt.Errorf("transit: flush: %w", ErrClosed)
	}
	return t.bus.flush(ctx)
}

func (t *Transit) send(ctx context.Context, qname string, msg message.Message, tag any, opts HostSendOptions, wait bool) (local bool, err error) {
	scope := t.host
	if opts.Destination != "" && opts.Destination != t.host {
		if err := ValidateHost(opts.Destination); err != nil {
			return false, fmt.Errorf("transit: send to %q: destination: %w", qname, err)
		}
		scope = hostScope(opts.Destination)
	}
	var l *Local
	if scope == t.host && !opts.BusOnly {
		if l = opts.Local; l == nil {
			l = t.local(qname)
		}
	}
	if l != nil && l.behindBus.Load() {
		if l.holdBehindBus() {
			// Published before endBehindBus can look at the backlog.
			defer l.busMu.RUnlock()
			l = nil
		}
	}
	if l == nil {
		// A hosted queue's name was validated by hostLocal.
		if err := ValidateQueueName(qname); err != nil {
			return false, err
		}
	}
	if t.closed.Load() {
		return false, fmt.Errorf("transit: send to %q: %w", qname, ErrClosed)
	}
	ts := sendTS(t.clock.unixNano())
	m, overrides := msg, false
	if opts.Canonical && m != nil {
		overrides = stamp(m, ts)
	} else if m, overrides, err = normalize(msg, ts); err != nil {
		return false, fmt.Errorf("transit: send to %q: %w", qname, err)
	}
	if l != nil && (!overrides || m.LocalityFor(qname) != message.LocalityNonLocal) {
		handled, err := l.push(ctx, m, tag, opts.NonBlocking, opts.Overflow)
		if handled {
			return err == nil, err
		}
	}
	if l != nil {
		// Unhosted meanwhile, or forced onto the bus: the name was not
		// checked yet.
		if err := ValidateQueueName(qname); err != nil {
			return false, err
		}
	}
	data, err := marshal(m)
	if err != nil {
		return false, fmt.Errorf("transit: send to %q: %w", qname, err)
	}
	if len(data) > MaxMessageBytes {
		return false, fmt.Errorf("transit: send to %q: %d bytes encoded, at most %d allowed: %w", qname, len(data), MaxMessageBytes, ErrTooLarge)
	}
	if !wait || opts.NonBlocking {
		return false, t.bus.publish(ctx, scope, qname, data, wait, opts.MsgID)
	}
	// Wait for room in a full bus queue, polling with a growing delay.
	delay := 5 * time.Millisecond
	for {
		err := t.bus.publish(ctx, scope, qname, data, true, opts.MsgID)
		if !errors.Is(err, ErrFull) {
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// Consume makes this process the owner of bus queue qname on this box's
// host scope and returns its deliveries. Only one owner per queue should
// consume at a time; a new owner takes over where the previous one
// stopped or died. ctx ends the consumer as Stop does.
func (t *Transit) Consume(ctx context.Context, qname string) (*Consumer, error) {
	if err := ValidateQueueName(qname); err != nil {
		return nil, err
	}
	if t.closed.Load() {
		return nil, fmt.Errorf("transit: consume %q: %w", qname, ErrClosed)
	}
	return t.bus.consume(ctx, t.host, qname)
}

// Receive takes one message off bus queue qname of this box's host scope,
// acknowledging it, and blocks until there is one or ctx ends. The rest of
// the queue stays in order. When the message came in a batch, the rest of
// the batch stays in this Transit for the next receives (the batch is
// acknowledged with its last message); Close records how far it got, so
// the next receiver or owner of the queue goes on from there.
func (t *Transit) Receive(ctx context.Context, qname string) (message.Message, error) {
	return t.receive(ctx, qname, true)
}

// TryReceive is Receive without waiting for a message to come: ErrEmpty
// when the bus says nothing waits in the queue. It does wait for the
// bus' answer, however slow.
func (t *Transit) TryReceive(ctx context.Context, qname string) (message.Message, error) {
	return t.receive(ctx, qname, false)
}

func (t *Transit) receive(ctx context.Context, qname string, wait bool) (message.Message, error) {
	if err := ValidateQueueName(qname); err != nil {
		return nil, err
	}
	if t.closed.Load() {
		return nil, fmt.Errorf("transit: receive from %q: %w", qname, ErrClosed)
	}
	return t.bus.receive(ctx, t.host, qname, wait)
}

// Stat describes queue qname: the local queue if it is hosted here, else
// the bus queue of this box's host scope.
func (t *Transit) Stat(ctx context.Context, qname string) (QueueStat, error) {
	if err := ValidateQueueName(qname); err != nil {
		return QueueStat{}, err
	}
	if t.closed.Load() {
		return QueueStat{}, fmt.Errorf("transit: stat %q: %w", qname, ErrClosed)
	}
	l := t.local(qname)
	b, err := t.bus.stat(ctx, t.host, qname)
	if l == nil {
		return b, err
	}
	// A queue hosted here: what waits in memory plus what waits on the bus
	// (as Stats reports it). Without the bus part a new owner would think
	// its bus backlog empty.
	s := localStat(l)
	if err != nil {
		return s, err
	}
	s.Msgs += b.Msgs
	s.Bytes += b.Bytes
	return s, nil
}

// QueueFilter selects the queues [Transit.Stats] lists. The zero value
// lists every known queue.
type QueueFilter struct {
	// Waiting lists only the queues holding messages. It costs the bus one
	// request, where listing every queue costs a listing of every queue's
	// consumer too, and nothing per empty local queue (a daemon may host
	// a thousand).
	Waiting bool
	// BusOnly leaves out what this process holds in memory: the queues of
	// this host scope as the bus has them, whether or not they are hosted
	// here too (Local false). A process that looks for work waiting on
	// the bus uses it with Waiting.
	BusOnly bool
}

// Stats lists the queues of this process and of this box's host scope on
// the bus (queues with waiting messages or an owner) that f selects,
// sorted by name. A queue both hosted here and present on the bus is
// listed once, as local, with the bus' waiting messages added (unless
// f.BusOnly).
func (t *Transit) Stats(ctx context.Context, f QueueFilter) ([]QueueStat, error) {
	if t.closed.Load() {
		return nil, fmt.Errorf("transit: stats: %w", ErrClosed)
	}
	all := !f.Waiting
	bus, err := t.bus.list(ctx, t.host, all)
	if err != nil {
		return nil, err
	}
	if f.BusOnly {
		sort.Slice(bus, func(i, j int) bool { return bus[i].Name < bus[j].Name })
		return bus, nil
	}
	byName := map[string]QueueStat{}
	for _, s := range bus {
		byName[s.Name] = s
	}
	for name, l := range *t.locals.Load() {
		s := localStat(l)
		b, onBus := byName[name]
		if !all && s.Msgs == 0 && !onBus {
			continue
		}
		if onBus {
			s.Msgs += b.Msgs
			s.Bytes += b.Bytes
		}
		byName[name] = s
	}
	out := make([]QueueStat, 0, len(byName))
	for _, s := range byName {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func localStat(l *Local) QueueStat {
	return QueueStat{Name: l.name, Msgs: int64(l.Len()), Capacity: Capacity{Msgs: int64(l.Cap())}, Local: true}
}
