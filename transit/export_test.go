package transit

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/message"
)

// SetAsyncBound sets, for Transits opened afterwards, how many queue
// messages SendAsync accepts before they are stored; it returns a
// function that restores the default.
func SetAsyncBound(n int) (restore func()) {
	old := asyncMaxMsgs
	asyncMaxMsgs = n
	return func() { asyncMaxMsgs = old }
}

// SetPullWait sets, for consumers started afterwards, how long a pull
// request stays with the bus; it returns a function that restores the
// default.
func SetPullWait(d time.Duration) (restore func()) {
	old := pullWait
	pullWait = d
	return func() { pullWait = old }
}

// CountPulls counts, from its return on, the pull requests t's consumers
// send, as the bus sees them (a subscriber to the JetStream API subject
// they are sent to), and returns a function that reports how many so far.
func CountPulls(t *Transit) (pulls func() int64, err error) {
	b := t.bus.(*natsBus)
	var n atomic.Int64
	if _, err := b.nc.Subscribe(jetstream.DefaultAPIPrefix+"CONSUMER.MSG.NEXT.>", func(*nats.Msg) { n.Add(1) }); err != nil {
		return nil, err
	}
	if err := b.nc.Flush(); err != nil {
		return nil, err
	}
	return n.Load, nil
}

// SignalReconnect tells t's consumers the connection was restored, as
// after a bus restart: each sends a new pull request although its last
// one is still alive at the bus.
func SignalReconnect(t *Transit) {
	b := t.bus.(*natsBus)
	close(*b.reconnected.Swap(new(make(chan struct{}))))
}

// DropDeliveries makes consumers and receivers discard the deliveries of
// the queues and consumer sequences drop returns true for, as if the pull
// client had lost them in flight (the bus counts them as delivered). It
// returns a function that stops it.
func DropDeliveries(drop func(queue string, consumerSeq uint64) bool) (restore func()) {
	dropDelivery.Store(&drop)
	return func() { dropDelivery.Store(nil) }
}

// DropAcks makes consumers skip sending the acknowledgements of the bus
// messages of the queues and stream sequences drop returns true for, as
// if the bus never applied them. It returns a function that stops it.
func DropAcks(drop func(queue string, streamSeq uint64) bool) (restore func()) {
	dropAck.Store(&drop)
	return func() { dropAck.Store(nil) }
}

// SendersWaiting reports whether a sender waits for room in l.
func (l *Local) SendersWaiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.room != nil
}

// SendWait is InProcess.Send that waits, as Transit.Send does, until the
// bus stored a message it published.
func (p InProcess) SendWait(ctx context.Context, qname string, msg message.Message, opts HostSendOptions) error {
	_, err := p.t.send(ctx, qname, msg, nil, opts, true)
	return err
}

// ProcessStartTime is processStartTime.
var ProcessStartTime = processStartTime

// MaxQueueNameLen is maxQueueNameLen.
const MaxQueueNameLen = maxQueueNameLen

// Name returns the queue name, for test failures.
func (l *Local) Name() string { return l.name }

// SetBeforeReceivePull makes every single receive call f just before it
// sends its pull request; the returned func removes it.
func SetBeforeReceivePull(f func()) (restore func()) {
	beforeReceivePull.Store(&f)
	return func() { beforeReceivePull.Store(nil) }
}

// SetAsyncPublishTimeout sets how long an asynchronous send waits for the
// bus' acknowledgement before it is published again, for Transits opened
// afterwards; it returns a function that restores the default.
func SetAsyncPublishTimeout(d time.Duration) (restore func()) {
	old := asyncPublishTimeout
	asyncPublishTimeout = d
	return func() { asyncPublishTimeout = old }
}

// AsyncPublishedAgain returns how many bus messages of asynchronous sends
// t scheduled to be published again so far.
func AsyncPublishedAgain(t *Transit) int64 { return t.bus.(*natsBus).pub.republished.Load() }

// SetPublishAttempt sets how long a sync send waits for the bus'
// acknowledgement before it sends again; it returns a function that
// restores the default.
func SetPublishAttempt(d time.Duration) (restore func()) {
	old := publishAttempt
	publishAttempt = d
	return func() { publishAttempt = old }
}

// CountBusDials counts, from its return on, the TCP connections this
// process opens to an embedded bus; restore puts the plain dial back.
func CountBusDials() (dials func() int64, restore func()) {
	var n atomic.Int64
	old := dialBusTCP
	dialBusTCP = func(address string, timeout time.Duration) (net.Conn, error) {
		n.Add(1)
		return old(address, timeout)
	}
	return n.Load, func() { dialBusTCP = old }
}

// BusStopSubject is the subject StopBus asks the bus to stop on.
const BusStopSubject = busStopSubject
