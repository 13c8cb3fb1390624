package daemon

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The garbage collector's policy is the program's, not a library's: the
// daemon sets it for its process (role.heapFloor) as it starts serving.
// The host package sets none.

// DefaultHeapFloor is the smallest heap goal the daemon gives the garbage
// collector.
//
// Why: a host's live heap is small (a few MB) while messages are
// allocated at a high rate (≈ 600 bytes per message through producer →
// Router → consumer: each message is a map, and the transport adds its
// metadata map). With the Go default (GOGC=100: collect when the heap has
// doubled, at least 4 MB) that means a collection every ≈ 3 ms at 1 M
// messages/s, each with two short stop-the-world pauses and a quarter of
// the CPUs marking — measured on 2 cores as ≈ 40 % fewer messages per
// second and a longer latency tail (docs/benchmarks.md). With a floor the
// collector runs ~10 times less often; memory stays bounded by the floor
// plus twice the live heap, and above the floor GOGC=100 applies as usual.
const DefaultHeapFloor = 32 << 20

// externalHeapFloor is the heap-goal floor of an external process: it hosts one task (and local copies of stateless ones), and a
// box may run dozens of them, so it trades less of the collector's work
// for memory than the daemon does.
const externalHeapFloor = 8 << 20

// gcTuner keeps the heap goal at or above a floor by adjusting the GC
// percentage after every collection. It is process-wide: the first call
// of tuneGC starts it, later floors are ignored.
var gcTuner struct {
	once    sync.Once
	floor   uint64
	percent atomic.Int64 // the percentage last set
	sample  []metrics.Sample
	mu      sync.Mutex
}

// tuneGC starts the tuner with floor bytes, unless floor is not positive
// or the user chose a GC setting with the GOGC environment variable.
func tuneGC(floor int64) {
	if floor <= 0 || os.Getenv("GOGC") != "" {
		return
	}
	gcTuner.once.Do(func() {
		gcTuner.floor = uint64(floor)
		gcTuner.sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		gcTuner.percent.Store(100)
		retune()
		armGCHook()
	})
}

// gcHook is an object that becomes garbage in every collection; its
// finalizer (run once per collection, on the runtime's finalizer
// goroutine) re-tunes and re-arms itself. No goroutine of ours, no timer.
type gcHook struct{ _ [16]byte }

func armGCHook() {
	h := new(gcHook)
	runtime.SetFinalizer(h, func(*gcHook) {
		retune()
		armGCHook()
	})
}

// retune sets the GC percentage for the live heap of the collection that
// just ended (gcPercent).
func retune() {
	gcTuner.mu.Lock()
	defer gcTuner.mu.Unlock()
	metrics.Read(gcTuner.sample)
	live := uint64(0)
	if s := gcTuner.sample[0]; s.Value.Kind() == metrics.KindUint64 {
		live = s.Value.Uint64()
	}
	if percent := gcPercent(gcTuner.floor, live); percent != gcTuner.percent.Load() {
		gcTuner.percent.Store(percent)
		debug.SetGCPercent(int(percent))
	}
}

// gcPercent is the GC percentage that makes the next heap goal
// max(2 × live, floor): GOGC=100 above the floor, more below it. The
// runtime's goal is max(live × (1 + p/100), 4 MB × p/100) — its minimum
// heap scales with the percentage too — so p is the smaller of the two
// that reach the floor. live 0 means not known yet.
func gcPercent(floor, live uint64) int64 {
	percent := int64(floor * 100 / runtimeHeapMinimum)
	if live > 0 {
		percent = min(percent, int64(floor*100/live)-100)
	}
	return max(percent, 100)
}

// runtimeHeapMinimum is the Go runtime's minimum heap goal at GOGC=100.
const runtimeHeapMinimum = 4 << 20
