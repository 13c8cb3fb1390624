package transit

// SetAsyncBound sets, for Transits opened afterwards, how many queue
// messages SendAsync accepts before they are stored; it returns a
// function that restores the default.
func SetAsyncBound(n int) (restore func()) {
	old := asyncMaxMsgs
	asyncMaxMsgs = n
	return func() { asyncMaxMsgs = old }
}
