package observe

import (
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/store"
)

// CollectStatus describes every task of the state directory, as
// `multimodule status` prints it: where it runs, its pid and whether that
// process runs, its failsafe and why it does not run, its state's age,
// its queue depth (from depth) and its alert levels other than ok (from
// levels). reasons are the daemon's (store.LoadReasons while it runs).
// Counters and Process are left for the daemon to fill.
func CollectStatus(st *store.Store, depth map[string]int64, levels store.Levels, reasons store.Reasons) ([]Task, error) {
	names, err := st.Tasks()
	if err != nil {
		return nil, err
	}
	out := make([]Task, 0, len(names))
	for _, name := range names {
		if name == "main" {
			continue
		}
		ts := Task{Task: name, Where: "-", Place: PlaceInternal, Queue: depth[name], Alerts: levels[name]}
		if cfg, _ := st.LoadConfig(name); cfg != nil && message.Truthy(cfg["is_external"]) {
			ts.Where = PlaceExternal
		} else if cfg != nil {
			ts.Where = PlaceInternal
		}
		if s, _ := st.LoadStatus(name); s != nil {
			ts.PID = s.PID
			ts.Running = s.Running()
			if s.External {
				ts.Where = PlaceExternal
			}
		}
		if ts.Where == PlaceExternal {
			ts.Place = PlaceExternal
		}
		if r, ok := reasons[name]; ok && !ts.Running {
			ts.Reason, ts.ReasonDetail = r.Reason, r.Detail
			if r.Until > 0 {
				at := r.Until
				ts.RetryAt = &at
			}
		}
		if fs, _ := st.ReadFailsafe(name); fs != nil {
			ts.Failsafed = true
			ts.Why, _ = fs["summary"].(string)
			ts.Running = false
			ts.Reason, ts.ReasonDetail, ts.RetryAt = "failsafe", ts.Why, nil
		}
		if state, _ := st.LoadState(name); state != nil {
			if t, ok := store.SaveTS(state); ok {
				age := time.Since(t).Seconds()
				ts.StateAge = &age
			}
		}
		out = append(out, ts)
	}
	return out, nil
}

// QueueOf describes one queue, with their fullness in percent:
// the larger of messages and bytes against their capacities.
func QueueOf(name string, msgs, bytes, capMsgs, capBytes int64, local bool) Queue {
	var p float64
	if capMsgs > 0 {
		p = float64(msgs) / float64(capMsgs)
	}
	if capBytes > 0 {
		p = max(p, float64(bytes)/float64(capBytes))
	}
	return Queue{Name: name, Waiting: msgs, Bytes: bytes, CapacityMsgs: capMsgs, CapacityBytes: capBytes, PercentFull: p * 100, Local: local}
}
