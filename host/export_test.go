package host

import "time"

// Inlined returns how many messages to task name were handled inline on
// their sender's goroutine (tryInline), or 0 when it is not loaded.
func (h *Host) Inlined(name string) uint64 {
	if r := (*h.hosted.Load())[name]; r != nil {
		return r.inlined.Load()
	}
	return 0
}

// SetInlineCostMax sets inlineCostMax and returns a function that
// restores it.
func SetInlineCostMax(d time.Duration) (restore func()) {
	old := inlineCostMax
	inlineCostMax = d
	return func() { inlineCostMax = old }
}
