package transit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
)

// Tuning of the JetStream backend.
const (
	fetchBatch   = 256                  // messages asked for per pull request (see pull.go)
	ackGroup     = 64                   // at most this many handled messages share one acknowledgement
	ackDelay     = 2 * time.Millisecond // a held-back acknowledgement waits at most this long
	asyncMaxPend = 4096                 // the jetstream client's bound of async publishes in flight: above the publisher's busMaxInflight, so never reached
	apiTimeout   = 10 * time.Second
	metaSuspect  = "multimodule_suspect_seq"
	metaSuspectN = "multimodule_suspect_count"
	// metaClean: the ack floor at which an owner whose Transit closed
	// cleanly left the queue's unacknowledged deliveries (see
	// recordCleanStops).
	metaClean     = "multimodule_clean_stop"
	maxAsyncKept  = 100 // SendAsync errors remembered for Flush
	reconnectWait = 100 * time.Millisecond
)

// natsBus is the NATS JetStream backend.
type natsBus struct {
	opts   *Options
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	ctx    context.Context // ends when the bus closes; kills consumers
	cancel context.CancelFunc

	pub *publisher

	// starter finds (and starts) the embedded bus; nil with NATSURL.
	starter *busStarter

	mu        sync.Mutex
	streams   map[string]jetstream.Stream   // ensured host scopes
	queues    map[string]jetstream.Consumer // ensured queue consumers, by scope+"\x00"+qname
	recv      map[string]*recvQueue         // receive state, by scope+"\x00"+qname
	consumers sync.WaitGroup
	// stopped are the consumers whose run ended with deliveries not
	// acknowledged (recordCleanStops).
	stoppedMu sync.Mutex
	stopped   []*natsConsumer

	// reconnected is closed (and replaced) when the connection is
	// restored: pull requests sent before may be gone with the bus.
	reconnected atomic.Pointer[chan struct{}]
	// conn ends when the connection is restored (and is replaced): a
	// request sent before may have gone with the bus.
	conn atomic.Pointer[connEpoch]
}

var _ backend = (*natsBus)(nil)

// publishAttempt is how long a sync send waits for the bus'
// acknowledgement before it sends again (a variable for tests).
var publishAttempt = 3 * time.Second

// asyncPublishTimeout is how long an asynchronous send waits for the
// bus' acknowledgement before it is published again (a variable for
// tests; read when the connection is made).
var asyncPublishTimeout = 30 * time.Second

// connEpoch is one stretch of a connection to the bus, from a
// (re)connect to the next reconnect, which cancels it.
type connEpoch struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newConnEpoch() *connEpoch {
	ctx, cancel := context.WithCancel(context.Background())
	return &connEpoch{ctx, cancel}
}

func openNATS(ctx context.Context, opts *Options, log *slog.Logger) (*natsBus, error) {
	b := &natsBus{opts: opts, log: log, streams: map[string]jetstream.Stream{}, queues: map[string]jetstream.Consumer{},
		recv: map[string]*recvQueue{}}
	b.reconnected.Store(new(make(chan struct{})))
	b.conn.Store(newConnEpoch())
	common := []nats.Option{
		nats.Name("multimodule " + opts.Host),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("bus connection restored", "url", nc.ConnectedAddr()) // not the URL: it may hold a token
			close(*b.reconnected.Swap(new(make(chan struct{}))))
			b.conn.Swap(newConnEpoch()).cancel()
		}),
	}
	var (
		nc  *nats.Conn
		err error
	)
	if opts.NATSURL != "" {
		nc, err = nats.Connect(opts.NATSURL, append(common, opts.NATSOptions...)...)
		if err != nil {
			return nil, fmt.Errorf("transit: connect to NATS %s: %w", opts.NATSURL, err)
		}
	} else {
		starter := &busStarter{dir: opts.TransportDir, cmd: opts.BusCommand, log: log, noStart: opts.NoStartBus}
		b.starter = starter
		bi, c, err := starter.ensure(ctx)
		if err != nil {
			return nil, err
		}
		// The connection that found the bus live is the first dial's.
		starter.keep(c)
		dir := opts.TransportDir
		nc, err = nats.Connect(bi.URL, append(common,
			nats.SetCustomDialer(&busDialer{starter: starter, timeout: 30 * time.Second}),
			nats.TokenHandler(func() string {
				tok, err := readToken(dir)
				if err != nil {
					log.Error("read the bus token", "err", err)
				}
				return tok
			}))...)
		starter.dropSpare() // unused when the connect failed before its dial
		if err != nil {
			return nil, fmt.Errorf("transit: connect to the embedded bus %s (from %s): %w", bi.URL, dir, err)
		}
	}
	b.nc = nc
	b.pub = newPublisher(b, nc.MaxPayload())
	b.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(asyncMaxPend),
		jetstream.WithPublishAsyncTimeout(asyncPublishTimeout),
		jetstream.WithPublishAsyncAckHandler(b.pub.acked),
		jetstream.WithPublishAsyncErrHandler(b.pub.failed))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("transit: jetstream: %w", err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if _, err := b.stream(ctx, opts.Host); err != nil {
		b.cancel()
		nc.Close()
		return nil, err
	}
	return b, nil
}

func (b *natsBus) streamName(scope string) string { return "MM_" + scope }

func (b *natsBus) subject(scope, qname string) string {
	return b.opts.SubjectPrefix + "." + scope + ".q." + encodeQueue(qname)
}

func consumerName(qname string) string { return "q_" + encodeQueue(qname) }

// stream returns the stream of host scope scope. This Transit's own
// scope's stream is created, with its capacity, if it does not exist yet
// (an existing stream keeps its configuration), unless Options.NoCreate;
// another scope's stream must exist (ErrUnknownHost): only a process of
// that host creates it.
func (b *natsBus) stream(ctx context.Context, scope string) (jetstream.Stream, error) {
	b.mu.Lock()
	s := b.streams[scope]
	b.mu.Unlock()
	if s != nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	name := b.streamName(scope)
	s, err := b.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) && (scope != b.opts.Host || b.opts.NoCreate) {
		return nil, fmt.Errorf("transit: host scope %q has no queues on the bus (no stream %s): a host's scope is created when a daemon (or command) of that host opens the bus; check the destination or start that daemon: %w", scope, name, ErrUnknownHost)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), streamCreateWait)
		stop := context.AfterFunc(ctx, func() {
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				ccancel() // the caller gave up; the API timeout alone does not end the wait
			}
		})
		s, err = b.createStream(cctx, scope, name)
		stop()
		ccancel()
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = b.js.Stream(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("transit: bus stream %s for host scope %q: %w", name, scope, err)
	}
	b.mu.Lock()
	b.streams[scope] = s
	b.mu.Unlock()
	return s, nil
}

// MinStreamBytes is the least storage a host scope's stream is sized
// to when its size comes from the free space (Capacity.Bytes zero).
const MinStreamBytes = 64 << 20

// jsInsufficientStorage is the JetStream error code of a stream whose
// MaxBytes the server cannot reserve ("insufficient storage resources
// available").
const jsInsufficientStorage jetstream.ErrorCode = 10047

// The JetStream error codes of a cluster that cannot place or answer for
// a stream now but may in a moment: no peers to place its replicas on (a
// server still joining, or one that is down), the system temporarily
// unavailable, no leader to handle the request (an election).
const (
	jsNoPeers       jetstream.ErrorCode = 10005
	jsNotAvailable  jetstream.ErrorCode = 10008
	jsClusterNoLead jetstream.ErrorCode = 10009
)

// clusterNotReady reports whether err is one of those.
func clusterNotReady(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsNoPeers:
		return !noStorage(apiErr)
	case jsNotAvailable, jsClusterNoLead:
		return true
	}
	return false
}

// noStorage reports whether a JetStream error says the stream's MaxBytes
// cannot be reserved: on one server its own code, on a cluster "no
// suitable peers" for that reason.
func noStorage(apiErr *jetstream.APIError) bool {
	return apiErr.ErrorCode == jsInsufficientStorage ||
		(apiErr.ErrorCode == jsNoPeers && strings.Contains(apiErr.Description, "insufficient storage"))
}

// Creating a host scope's stream on a cluster that cannot place it yet
// (see clusterNotReady; or, with replicas, a request the cluster does not
// answer while it elects a leader) is tried again, each attempt waiting
// clusterAttempt at most, with waits in between doubling up to
// clusterRetryMax, for streamCreateWait in all (unless the caller's
// context ends first).
const (
	clusterAttempt   = 3 * time.Second
	clusterRetryMax  = 2 * time.Second
	streamCreateWait = 30 * time.Second
)

// streamBytes is the MaxBytes for a new stream, and whether it was
// chosen here (auto) rather than given by Options.Capacity.Bytes. Chosen
// here: DefaultCapacity.Bytes, and for the embedded bus at most half of
// the space free on the transport directory's file system (free, or -1
// when that is not known).
func (b *natsBus) streamBytes() (size int64, auto bool, free int64) {
	free = -1
	if b.opts.NATSURL == "" {
		free = freeBytes(b.opts.TransportDir)
	}
	if b.opts.Capacity.Bytes > 0 {
		return b.opts.Capacity.Bytes, false, free
	}
	size = DefaultCapacity.Bytes
	if free >= 0 {
		size = min(size, free/2&^(1<<20-1))
	}
	return size, true, free
}

// freeBytes is the space an unprivileged user may still write on the
// file system of dir, or -1 when it cannot be told.
func freeBytes(dir string) int64 {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return -1
	}
	return int64(fs.Bavail) * fs.Bsize
}

// createStream creates the stream of this Transit's own host scope,
// sized by streamBytes. A size chosen here that the bus cannot reserve
// is halved, down to MinStreamBytes; a size it still cannot reserve, or
// a size given by the caller it cannot reserve, is an error that says
// what to do.
func (b *natsBus) createStream(ctx context.Context, scope, name string) (jetstream.Stream, error) {
	size, auto, free := b.streamBytes()
	if auto && free >= 0 && size < MinStreamBytes {
		return nil, fmt.Errorf("transit: bus stream %s for host scope %q: the transport file system (%s) has only %s free; the bus keeps the host scope's queues in half of the free space there and needs at least %s: free space there, or put the transport directory (-T) on a larger file system, or set the size with --bus-max-bytes (see \"Bus storage\" in docs/operations.md)",
			name, scope, b.opts.TransportDir, mib(free), mib(2*MinStreamBytes))
	}
	wait, warned := 100*time.Millisecond, false
	for {
		actx, acancel := context.WithTimeout(ctx, clusterAttempt)
		s, err := b.js.CreateStream(actx, jetstream.StreamConfig{
			Name:                 name,
			Description:          "MultiModule queues of host scope " + scope,
			Subjects:             []string{b.opts.SubjectPrefix + "." + scope + ".q.>"},
			Retention:            jetstream.InterestPolicy,
			Storage:              jetstream.FileStorage,
			Discard:              jetstream.DiscardNew,
			DiscardNewPerSubject: true,
			MaxMsgsPerSubject:    b.opts.Capacity.Msgs,
			MaxBytes:             size,
			MaxMsgSize:           int32(min(MaxMessageBytes, size)),
			MaxConsumers:         -1, // one per queue, however many tasks
			Replicas:             b.opts.Replicas,
		})
		acancel()
		if clusterNotReady(err) || (b.opts.Replicas > 1 && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
			// A cluster that is forming, electing or missing a server
			// places the stream once it can: wait for it as long as
			// ctx allows, then say what it answered.
			if !warned {
				b.log.Warn("the bus cluster cannot place the host scope's stream yet; waiting", "stream", name, "replicas", b.opts.Replicas, "err", err)
				warned = true
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("the cluster could not place it with %d replicas in time (%v): %w (do enough servers with JetStream run, and are they connected as a cluster?)",
					b.opts.Replicas, context.Cause(ctx), err)
			case <-t.C:
			}
			wait = min(2*wait, clusterRetryMax)
			continue
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || !noStorage(apiErr) {
			if err == nil && auto {
				b.log.Info("bus storage of the host scope sized", "stream", name, "max_bytes", size, "free_bytes", free)
			}
			return s, err
		}
		if auto && size/2 >= MinStreamBytes {
			b.log.Warn("the bus cannot reserve the storage for the host scope; trying half", "stream", name, "max_bytes", size, "free_bytes", free)
			size /= 2
			continue
		}
		return nil, b.storageError(name, scope, size, free, err)
	}
}

// storageError explains a stream the bus could not reserve size bytes
// for, and what to do.
func (b *natsBus) storageError(name, scope string, size, free int64, err error) error {
	if b.opts.NATSURL != "" {
		return fmt.Errorf("transit: bus stream %s for host scope %q: the NATS server cannot reserve %s for it (%w): give the server's JetStream more storage (max_file_store), or set a smaller size with --bus-max-bytes (see \"Bus storage\" in docs/operations.md)",
			name, scope, mib(size), err)
	}
	pid := "the `multimodule bus` process"
	if bi, rerr := ReadBusInfo(b.opts.TransportDir); rerr == nil {
		pid = fmt.Sprintf("the `multimodule bus` process, pid %d,", bi.PID)
	}
	return fmt.Errorf("transit: bus stream %s for host scope %q: the embedded bus cannot reserve %s for it (%w). It may reserve 3/4 of the space that was free on the transport file system (%s, %s free now) when it started: free space there or put the transport directory (-T) on a larger file system, then stop %s so that the next start sizes it anew; or set a smaller size with --bus-max-bytes (see \"Bus storage\" in docs/operations.md)",
		name, scope, mib(size), err, b.opts.TransportDir, mib(free), pid)
}

// mib formats n bytes in MiB.
func mib(n int64) string {
	if n < 0 {
		return "an unknown amount"
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func (b *natsBus) forgetStream(scope string) {
	b.mu.Lock()
	delete(b.streams, scope)
	for k := range b.queues {
		if strings.HasPrefix(k, scope+"\x00") {
			delete(b.queues, k)
		}
	}
	b.mu.Unlock()
}

// queueConsumer returns the durable consumer of queue qname, creating it
// when needed. An existing consumer is used as it is (its metadata holds
// take-over bookkeeping).
func (b *natsBus) queueConsumer(ctx context.Context, scope, qname string) (jetstream.Consumer, error) {
	key := scope + "\x00" + qname
	b.mu.Lock()
	c := b.queues[key]
	b.mu.Unlock()
	if c != nil {
		return c, nil
	}
	s, err := b.stream(ctx, scope)
	if err != nil {
		return nil, err
	}
	wctx := ctx
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	// One request in the common cases: "create" returns an existing
	// consumer of the same config as it is, and fails only when the
	// existing one differs (take-over bookkeeping in its metadata,
	// another AckWait): then it is looked up and used as it is.
	name := consumerName(qname)
	c, err = s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "MultiModule queue " + qname,
		FilterSubject: b.subject(scope, qname),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       b.opts.AckWait,
		MaxDeliver:    -1, // we dead-letter ourselves, with the reason
		MaxAckPending: 4 * fetchBatch,
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		c, err = s.Consumer(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("transit: bus consumer for queue %q (scope %q): %w", qname, scope, err)
	}
	// Not before every node of the stream has it: a node without it
	// drops the queue's messages (see waitConsumerSetUp).
	if err := waitConsumerSetUp(wctx, s, c, b.log); err != nil {
		return nil, fmt.Errorf("transit: queue %q (scope %q): %w", qname, scope, err)
	}
	b.mu.Lock()
	b.queues[key] = c
	b.mu.Unlock()
	return c, nil
}

// classify turns bus errors the caller can act on into sentinels.
func classify(err error, qname string) error {
	if err == nil {
		return nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		d := apiErr.Description
		if strings.Contains(d, "maximum messages") || strings.Contains(d, "maximum bytes") {
			return fmt.Errorf("transit: send to %q: %s: %w", qname, d, ErrFull)
		}
	}
	return fmt.Errorf("transit: send to %q: %w", qname, err)
}

func (b *natsBus) publish(ctx context.Context, scope, qname string, data []byte, wait bool, id string) error {
	// The stream keeps a message while a consumer is interested in it:
	// the queue's durable consumer must exist before the first message.
	if _, err := b.queueConsumer(ctx, scope, qname); err != nil {
		return err
	}
	subj := b.subject(scope, qname)
	if !wait {
		return b.pub.enqueue(ctx, scope, subj, qname, data, id)
	}
	// A sync send goes out after what this process sent to the queue
	// asynchronously before (FIFO per sender), alone and with a message
	// ID. It retries until the bus stored the message or ctx ends:
	// after "no responders" (nothing stored: the bus is restarting) and
	// after an attempt timed out (maybe stored: the message ID makes the
	// stream drop the duplicate).
	if err := b.pub.wait(ctx, subj); err != nil {
		return fmt.Errorf("transit: send to %q: after the earlier sends: %w", qname, err)
	}
	msg := nats.NewMsg(subj)
	msg.Data = data
	if id != "" {
		msg.Header = nats.Header{jetstream.MsgIDHeader: []string{id}}
	} else {
		b.pub.setMsgID(msg)
	}
	delay := 10 * time.Millisecond
	for {
		// An attempt ends when the connection is restored, too: a request
		// sent to a bus that died is never answered, and the new bus
		// takes the retry at once.
		pctx, cancel := context.WithTimeout(ctx, publishAttempt)
		stop := context.AfterFunc(b.conn.Load().ctx, cancel)
		_, err := b.js.PublishMsg(pctx, msg)
		stop()
		cancel()
		retry := errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
			((errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) && ctx.Err() == nil)
		if !retry {
			return classify(err, qname)
		}
		b.log.Debug("send not acknowledged yet; retrying", "queue", qname, "err", err)
		b.forgetStream(scope)
		select {
		case <-ctx.Done():
			return fmt.Errorf("transit: send to %q: %w (%w)", qname, err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
		if _, err := b.queueConsumer(ctx, scope, qname); err != nil {
			b.log.Warn("bus queue not available yet", "scope", scope, "queue", qname, "err", err)
		}
	}
}

func (b *natsBus) flush(ctx context.Context) error {
	if err := b.pub.wait(ctx, ""); err != nil {
		return fmt.Errorf("transit: flush: %w", err)
	}
	return errors.Join(b.pub.takeErrors()...)
}

func (b *natsBus) close() error {
	b.cancel()
	defer b.conn.Load().cancel()
	b.closeReceives()
	b.consumers.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.flush(ctx)
	// After the flush, which matters more, and briefly: the record only
	// spares the next owner a crash count.
	rctx, rcancel := context.WithTimeout(ctx, cleanStopRecordWait)
	b.recordCleanStops(rctx)
	rcancel()
	b.pub.stop()
	if ferr := b.nc.FlushWithContext(ctx); ferr != nil && err == nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
		err = fmt.Errorf("transit: close: flush the connection: %w", ferr)
	}
	b.nc.Close()
	return err
}

// cleanStopRecordWait bounds recordCleanStops.
const cleanStopRecordWait = time.Second

// recordCleanStops records, as the Transit closes cleanly, on the queue
// consumers of this process whose owners stopped with deliveries not
// acknowledged, that the process did not die handling them: the ack
// floor they were left at (metaClean). The next owner counts no death
// for the first of them (the crash count that dead-letters a poison
// message) when the floor is still there. A queue another owner received
// deliveries from since (its delivered count moved) is left alone.
func (b *natsBus) recordCleanStops(ctx context.Context) {
	b.stoppedMu.Lock()
	stopped := b.stopped
	b.stopped = nil
	b.stoppedMu.Unlock()
	for _, c := range stopped {
		info, err := c.cons.Info(ctx)
		if err != nil || info.NumAckPending == 0 || info.Delivered.Consumer != c.lastDelivered {
			continue
		}
		cfg := info.Config
		md := make(map[string]string, len(cfg.Metadata)+1)
		for k, v := range cfg.Metadata {
			md[k] = v
		}
		md[metaClean] = strconv.FormatUint(info.AckFloor.Stream, 10)
		cfg.Metadata = md
		if _, err := b.js.UpdateConsumer(ctx, info.Stream, cfg); err != nil {
			b.log.Warn("record a clean stop; the next owner counts it as a death of the first message not acknowledged",
				"queue", c.qname, "err", err)
		}
	}
}

// takeover describes a queue whose previous owner left messages
// delivered but unacknowledged: the consumer was reset to its ack floor,
// and the first message now delivered is the one that was in flight.
type takeover struct {
	active    bool
	replayEnd uint64 // the last stream sequence the previous owner got
	prevSeq   uint64 // suspect recorded by earlier take-overs
	prevCount int
	doneSeq   uint64 // a bus message a previous owner left cleanly after doneN of its queue messages
	doneN     int
	// clean: the previous owner's Transit closed cleanly with the
	// deliveries after the current ack floor not acknowledged
	// (metaClean): none of them was being handled by an owner that died.
	clean    bool
	hadClean bool // metaClean was set (to be removed)
	cfg      jetstream.ConsumerConfig
	// delivered is the consumer sequence of the consumer's last delivery
	// before this owner's first pull, if known. Every delivery increments
	// it, so a delivery this owner never saw shows as a gap (see
	// seqWatch).
	delivered uint64
	known     bool
	// pending is how many messages of the queue wait to be delivered
	// (the consumer's NumPending), when known is true.
	pending uint64
}

// takeOver resets the consumer to its ack floor when messages are
// delivered and not acknowledged (their owner died), so they come again
// first and in order. With onlyIdle, it does nothing while some client
// has a pull request waiting (a live owner). It asks the bus for the
// consumer's info: the info a "create" of an existing consumer returns
// can be a snapshot from when the bus (re)started.
func (b *natsBus) takeOver(ctx context.Context, scope string, cons jetstream.Consumer, onlyIdle bool) (takeover, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return takeover{}, fmt.Errorf("transit: bus consumer %s: info: %w", cons.CachedInfo().Name, err)
	}
	tk := takeover{cfg: info.Config}
	tk.doneSeq, tk.doneN = parseDone(info.Config.Metadata[metaDone])
	if v, ok := info.Config.Metadata[metaClean]; ok {
		floor, err := strconv.ParseUint(v, 10, 64)
		tk.hadClean, tk.clean = true, err == nil && floor == info.AckFloor.Stream
	}
	tk.delivered, tk.known, tk.pending = info.Delivered.Consumer, true, info.NumPending
	if info.NumAckPending == 0 || (onlyIdle && info.NumWaiting > 0) {
		return tk, nil
	}
	tk.active, tk.replayEnd = true, info.Delivered.Stream
	tk.prevSeq, _ = strconv.ParseUint(info.Config.Metadata[metaSuspect], 10, 64)
	tk.prevCount, _ = strconv.Atoi(info.Config.Metadata[metaSuspectN])
	if _, err := b.js.ResetConsumer(ctx, b.streamName(scope), info.Name); err != nil {
		return takeover{}, fmt.Errorf("transit: bus consumer %s: reset to the ack floor: %w", info.Name, err)
	}
	b.log.Info("took over a queue with unacknowledged messages", "consumer", info.Name,
		"pending", info.NumAckPending, "ack_floor", info.AckFloor.Stream, "delivered", info.Delivered.Stream)
	tk.delivered, tk.known = 0, false
	if after, err := cons.Info(ctx); err == nil {
		tk.delivered, tk.known, tk.pending = after.Delivered.Consumer, true, after.NumPending
	}
	return tk, nil
}

// deadLetter moves d to the dead-letter queue of scope (publishDead, with
// d's own reason), then, if d is the last queue message of its bus
// message, acknowledges the bus message. Every earlier delivery must be
// handled already (AckAll).
func (b *natsBus) deadLetter(ctx context.Context, giveUp <-chan struct{}, scope, qname string, d *Delivery, keep func()) error {
	if err := b.publishDead(ctx, giveUp, scope, qname, d, d.dead, nil, keep); err != nil {
		return err
	}
	if !d.isLast() {
		return nil // the bus message is acknowledged with its last queue message
	}
	actx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if err := d.ref.(jetstream.Msg).DoubleAck(actx); err != nil {
		return fmt.Errorf("transit: acknowledge dead-lettered message %d of %q: %w", d.Seq, qname, err)
	}
	return nil
}

// deadLetterOwned is Delivery.DeadLetter: the owner moves d to the
// dead-letter queue and acknowledges it itself.
func (c *natsConsumer) deadLetterOwned(ctx context.Context, d *Delivery, reason string, details map[string]any) error {
	return c.b.publishDead(ctx, nil, c.scope, c.qname, d, reason, details, nil)
}

// publishDead stores d in the dead-letter queue of scope with reason and
// details in its dead_letter record.
//
// It retries until it succeeds, ctx ends, or giveUp is closed (checked
// between attempts, so a stopping owner is not held up by a dead-letter
// queue that has no room; nil: never). Meanwhile keep, if not nil, is
// called every AckWait/3 to keep the bus message (and whatever else the
// caller holds) in progress: the bus must not hand it out again while it
// is being dead-lettered. When the dead-letter queue is full, its oldest
// dead letters make room (see dropOldestDeadLetters).
func (b *natsBus) publishDead(ctx context.Context, giveUp <-chan struct{}, scope, qname string, d *Delivery, reason string, details map[string]any, keep func()) error {
	data := deadLetterData(scope, qname, d, reason, details)
	b.log.Warn("moving a message to the dead-letter queue", "queue", qname, "seq", d.Seq, "reason", reason)
	if keep != nil {
		k := keepDoing(max(b.opts.AckWait/3, 10*time.Millisecond), keep)
		defer k.stop()
	}
	delay := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, apiTimeout)
		err := b.publish(actx, scope, DeadLetterQueue, data, true, "")
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrFull) {
			dropped, derr := b.dropOldestDeadLetters(ctx, scope)
			if derr == nil && dropped > 0 {
				continue
			}
			if derr != nil {
				err = errors.Join(err, derr)
			}
		}
		b.log.Error("dead-letter publish failed; retrying", "queue", qname, "seq", d.Seq, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("transit: dead-letter message %d of %q: %w", d.Seq, qname, err)
		case <-giveUp:
			return fmt.Errorf("transit: dead-letter message %d of %q: stopped while retrying: %w", d.Seq, qname, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// deadLetterData is the JSON of d's dead letter: its message (for bytes
// that were not one, rawMessage) with reason and details in
// .ipc_transit_meta.dead_letter. When that is larger than the bus
// carries, the dead letter keeps the record and, for raw bytes, as many
// of them as fit (base64, raw_truncated true, raw_bytes their number).
func deadLetterData(scope, qname string, d *Delivery, reason string, details map[string]any) []byte {
	msg := d.Msg
	meta := msg.EnsureMeta()
	info := map[string]any{
		"reason":     reason,
		"queue":      qname,
		"deliveries": int64(d.Deliveries),
		"seq":        int64(d.Seq),
		"host":       scope,
		"time":       float64(time.Now().UnixNano()) / 1e9,
	}
	if d.members > 1 {
		// One of several queue messages that travelled in bus message seq.
		info["member"] = int64(d.member + 1)
		info["members"] = int64(d.members)
	}
	for k, v := range details {
		info[k] = v
	}
	meta["dead_letter"] = info
	data, err := message.Marshal(msg)
	if err == nil && len(data) <= MaxMessageBytes {
		return data
	}
	small := message.Message{message.MetaKey: map[string]any{"dead_letter": info}}
	if d.raw != nil {
		n := min(len(d.raw), (MaxMessageBytes-64<<10)/4*3)
		small["raw"] = base64.StdEncoding.EncodeToString(d.raw[:n])
		small["raw_encoding"] = "base64"
		small["raw_truncated"] = n < len(d.raw)
		small["raw_bytes"] = int64(len(d.raw))
	}
	data, _ = message.Marshal(small)
	return data
}

// dropOldestDeadLetters makes room in the dead-letter queue of scope,
// which refused a dead letter (full: at its message limit, or the host
// scope's stream at its byte limit): it drops the oldest 1% of its dead
// letters (at least one) and raises an alert. It returns how many it
// dropped: 0 when the queue is empty (the stream is full of other
// queues' messages; the dead letter waits for room like any send).
func (b *natsBus) dropOldestDeadLetters(ctx context.Context, scope string) (int, error) {
	s, err := b.stream(ctx, scope)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	subj := b.subject(scope, DeadLetterQueue)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("transit: dead-letter queue of scope %q: %w", scope, err)
	}
	n := info.State.Subjects[subj]
	if n == 0 {
		return 0, nil
	}
	drop := max(1, n/100)
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(n-drop)); err != nil {
		return 0, fmt.Errorf("transit: drop the oldest dead letters of scope %q: %w", scope, err)
	}
	b.log.Error("the dead-letter queue is full: dropped its oldest dead letters to make room for new ones",
		"channel", "alert", "scope", scope, "queue", DeadLetterQueue, "dropped", drop, "kept", n-drop,
		"limit_msgs", info.Config.MaxMsgsPerSubject, "limit_bytes", info.Config.MaxBytes)
	return int(drop), nil
}

func (b *natsBus) stat(ctx context.Context, scope, qname string) (QueueStat, error) {
	st := QueueStat{Name: qname, Capacity: b.opts.Capacity}
	s, err := b.stream(ctx, scope)
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	subj := b.subject(scope, qname)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return st, fmt.Errorf("transit: stat %q: %w", qname, err)
	}
	st.Capacity = Capacity{Msgs: info.Config.MaxMsgsPerSubject, Bytes: info.Config.MaxBytes}
	st.Msgs = int64(info.State.Subjects[subj])
	st.Bytes = avgBytes(info.State) * st.Msgs
	return st, nil
}

func avgBytes(s jetstream.StreamState) int64 {
	if s.Msgs == 0 {
		return 0
	}
	return int64(s.Bytes / s.Msgs)
}

func (b *natsBus) list(ctx context.Context, scope string, all bool) ([]QueueStat, error) {
	s, err := b.stream(ctx, scope)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	prefix := b.opts.SubjectPrefix + "." + scope + ".q."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("transit: list queues of scope %q: %w", scope, err)
	}
	capacity := Capacity{Msgs: info.Config.MaxMsgsPerSubject, Bytes: info.Config.MaxBytes}
	avg := avgBytes(info.State)
	byName := map[string]QueueStat{}
	for subj, n := range info.State.Subjects {
		q := decodeQueue(strings.TrimPrefix(subj, prefix))
		byName[q] = QueueStat{Name: q, Msgs: int64(n), Bytes: avg * int64(n), Capacity: capacity}
	}
	if !all {
		return slices.Collect(maps.Values(byName)), nil
	}
	names := s.ConsumerNames(ctx)
	for n := range names.Name() {
		if !strings.HasPrefix(n, "q_") {
			continue
		}
		q := decodeQueue(strings.TrimPrefix(n, "q_"))
		if _, ok := byName[q]; !ok {
			byName[q] = QueueStat{Name: q, Capacity: capacity}
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("transit: list queues of scope %q: %w", scope, err)
	}
	out := make([]QueueStat, 0, len(byName))
	for _, st := range byName {
		out = append(out, st)
	}
	return out, nil
}
