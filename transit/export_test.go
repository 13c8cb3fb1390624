package transit

// SetAsyncBound sets, for Transits opened afterwards, how many queue
// messages SendAsync accepts before they are stored; it returns a
// function that restores the default.
func SetAsyncBound(n int) (restore func()) {
	old := asyncMaxMsgs
	asyncMaxMsgs = n
	return func() { asyncMaxMsgs = old }
}

// SendersWaiting reports whether a sender waits for room in l.
func (l *Local) SendersWaiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.room != nil
}
