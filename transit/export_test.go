package transit

// SetAsyncBound sets, for Transits opened afterwards, how many queue
// messages SendAsync accepts before they are stored; it returns a
// function that restores the default.
func SetAsyncBound(n int) (restore func()) {
	old := asyncMaxMsgs
	asyncMaxMsgs = n
	return func() { asyncMaxMsgs = old }
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
