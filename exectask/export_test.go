package exectask

// MaxInFlight is the most message requests ever in flight at once to the
// task's co-processes (1: one at a time, as protocol 1).
func (t *Task) MaxInFlight() int { return t.maxInFlight }
