package host_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
)

// The status file of a task hosted by the daemon says what the task is
// (stateful or not) and carries the daemon's usage, marked shared.
func TestInternalTaskStatus(t *testing.T) {
	rec := newRecorder()
	f := newFixture(t, rec, nil)
	if err := f.h.ConfigureAll(map[string]any{"Keeper": map[string]any{}, "Probe": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	for name, stateful := range map[string]bool{"Keeper": true, "Probe": false} {
		mmtest.Eventually(t, 10*time.Second, func() error {
			st, err := f.st.LoadStatus(name)
			if err != nil || st == nil {
				return fmt.Errorf("%s: no status yet (%v)", name, err)
			}
			switch {
			case st.PID != os.Getpid() || st.External:
				return fmt.Errorf("%s: status %+v, want this process, not external", name, st)
			case st.Stateful != stateful:
				return fmt.Errorf("%s: is_stateful %v, want %v", name, st.Stateful, stateful)
			case st.FDs <= 0 || st.Threads <= 0 || st.RSSBytes == 0:
				return fmt.Errorf("%s: fh_count %d, thread_count %d, rss_bytes %d: want the process's", name, st.FDs, st.Threads, st.RSSBytes)
			case !st.Shared:
				return fmt.Errorf("%s: shared false, want true (the daemon's usage)", name)
			}
			return nil
		})
	}
}
