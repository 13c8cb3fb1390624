package daemon

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		floor, live uint64
		want        int64
	}{
		{32 * mb, 0, 800},        // unknown live heap: the runtime's 4 MB minimum × 8
		{32 * mb, 1 * mb, 800},   // small heap: the minimum heap (4 MB × 8) is the floor
		{32 * mb, 4 * mb, 700},   // 4 MB × 8 = 32 MB
		{32 * mb, 8 * mb, 300},   // 8 MB × 4
		{32 * mb, 16 * mb, 100},  // 2 × live reaches the floor: the Go default
		{32 * mb, 100 * mb, 100}, // above the floor: the Go default
		{64 * mb, 2 * mb, 1600},
	}
	for _, tt := range tests {
		if got := gcPercent(tt.floor, tt.live); got != tt.want {
			t.Errorf("gcPercent(%d MB, %d MB): got %d, want %d", tt.floor/mb, tt.live/mb, got, tt.want)
		}
	}
}

// TestGCTunerRunsAfterCollections checks that the tuner is armed again
// after every collection and keeps the runtime's GC percentage at what
// gcPercent says for the live heap.
func TestGCTunerRunsAfterCollections(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the tuner stays off")
	}
	tuneGC(DefaultHeapFloor) // a no-op if a daemon run by this test binary started it already
	read := func() int64 {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	for round := range 3 {
		// Undo the tuning; only the tuner run by this collection can
		// bring it back.
		gcTuner.mu.Lock()
		gcTuner.percent.Store(100)
		debug.SetGCPercent(100)
		gcTuner.mu.Unlock()
		runtime.GC()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if p := gcTuner.percent.Load(); p > 100 && read() == p {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: GC percent %d, tuner's %d; want equal and above 100 for a test binary's small heap", round, read(), gcTuner.percent.Load())
			}
			time.Sleep(time.Millisecond) // the finalizer goroutine runs the tuner after the collection
		}
	}
}
