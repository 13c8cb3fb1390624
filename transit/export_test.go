package transit

import "time"

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

// Pulls returns how many pull requests the consumers of t have sent.
func Pulls(t *Transit) int64 { return t.bus.(*natsBus).pulls.Load() }

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

// SendersWaiting reports whether a sender waits for room in l.
func (l *Local) SendersWaiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.room != nil
}

// SetPublishAttempt sets how long a sync send waits for the bus'
// acknowledgement before it sends again; it returns a function that
// restores the default.
func SetPublishAttempt(d time.Duration) (restore func()) {
	old := publishAttempt
	publishAttempt = d
	return func() { publishAttempt = old }
}
