package host

import (
	"time"

	"github.com/multimodule/multimodule/oob"
)

// saveJob is one state snapshot for the saver; done, when not nil, is
// closed once it is written (or has failed).
type saveJob struct {
	task  string
	state map[string]any
	done  chan struct{}
}

// saveRetryInterval is how often a state save that failed (disk full, a
// read-only state directory) is tried again.
const saveRetryInterval = time.Second

// saver writes state snapshots off the task goroutines, one at a time.
// A save that failed is retried until it succeeds or a newer snapshot of
// the task replaces it: the task only snapshots state that changed, so
// without the retry a task that went quiet would keep its latest state
// unsaved after the disk had room again. A failure is reported once per
// streak, and the recovery too.
func (h *Host) saver() {
	defer h.wg.Done()
	failed := map[string]saveJob{}
	// Armed only while a save failed: an idle host does not wake up.
	retry := time.NewTimer(saveRetryInterval)
	retry.Stop()
	defer retry.Stop()
	armed := false
	save := func(job saveJob) {
		_, streak := failed[job.task]
		if err := h.opts.Store.SaveState(job.task, job.state); err != nil {
			if !streak {
				h.out(oob.ChannelError, job.task, "save state: "+err.Error()+" (retrying every "+saveRetryInterval.String()+")", nil)
			}
			job.done = nil
			failed[job.task] = job
			return
		}
		if streak {
			delete(failed, job.task)
			h.out(oob.ChannelLog, job.task, "state saved again after failed saves", nil)
		}
	}
	for {
		select {
		case job, ok := <-h.saveCh:
			if !ok {
				return
			}
			save(job)
			if job.done != nil {
				close(job.done)
			}
		case <-retry.C:
			armed = false
			for _, job := range failed {
				save(job)
			}
		}
		if !armed && len(failed) > 0 {
			retry.Reset(saveRetryInterval)
			armed = true
		}
	}
}
