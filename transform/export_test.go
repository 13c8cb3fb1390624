package transform

import "time"

// SetEvalTimeLimit replaces MaxEvalTime for a test and returns the
// function that restores it.
func SetEvalTimeLimit(d time.Duration) (restore func()) {
	old := evalTimeLimit.Swap(int64(d))
	return func() { evalTimeLimit.Store(old) }
}
