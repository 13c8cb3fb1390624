package store

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentUse saves and loads many tasks from many goroutines at
// once, several goroutines per task. Every load must see one complete
// version (never a torn or corrupt file, never an error), and the last
// saved version must be there at the end. Run with -race to check the
// Store's own bookkeeping.
func TestConcurrentUse(t *testing.T) {
	s := openStore(t)
	const (
		tasks   = 8
		writers = 3 // per task
		rounds  = 20
	)
	var wg sync.WaitGroup
	errs := make(chan error, tasks*writers*rounds*4)
	for ti := range tasks {
		task := fmt.Sprintf("Task%d", ti)
		for w := range writers {
			wg.Go(func() {
				for r := range rounds {
					state := map[string]any{"writer": int64(w), "round": int64(r), "pad": "xxxxxxxxxxxxxxxx"}
					if err := s.SaveState(task, state); err != nil {
						errs <- err
					}
					if err := s.SaveConfig(task, state); err != nil {
						errs <- err
					}
					got, err := s.LoadState(task)
					if err != nil {
						errs <- err
					} else if got["pad"] != "xxxxxxxxxxxxxxxx" {
						errs <- fmt.Errorf("LoadState(%s): got %v, want a complete version", task, got)
					}
					if _, err := s.LoadAllConfigs(); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for ti := range tasks {
		task := fmt.Sprintf("Task%d", ti)
		got, err := s.LoadState(task)
		if err != nil || got["round"] != int64(rounds-1) {
			t.Errorf("final LoadState(%s): got %v, %v, want round %d", task, got, err, rounds-1)
		}
	}
	noTemps(t, s.Dir())
}
