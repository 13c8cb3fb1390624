package monitor

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/multimodule/multimodule/procid"
)

// ProcessSample is what one process uses at one moment, in the units of
// the process metrics.
type ProcessSample struct {
	FDs              float64 // open file handles (MetricFDs)
	Threads          float64 // threads (MetricThreads)
	MemFractionOfBox float64 // resident memory ÷ physical memory (MetricMemory)
	ReadBytesPerSec  float64 // storage bytes read per second since the previous sample (MetricDiskRead)
	WriteBytesPerSec float64 // storage bytes written per second since the previous sample (MetricDiskWrite)
	CPUCores         float64 // CPU seconds per second since the previous sample, i.e. cores busy (MetricCPU)
}

// reading is the last usage seen of one pid.
type reading struct {
	t time.Time
	u procid.Usage
}

// Sampler turns /proc readings of processes into ProcessSamples. The
// rates (CPU, disk) are the change since the previous Sample of the same
// pid, so the first Sample of a pid has none. It is safe for concurrent
// use.
type Sampler struct {
	memTotal uint64 // physical memory in bytes

	mu   sync.Mutex
	prev map[int]reading
}

// NewSampler returns a Sampler, reading the box's physical memory size
// once (MemTotal of /proc/meminfo).
func NewSampler() (*Sampler, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("monitor: sampler: open /proc: %w", err)
	}
	mi, err := fs.Meminfo()
	if err != nil {
		return nil, fmt.Errorf("monitor: sampler: read /proc/meminfo: %w", err)
	}
	var total uint64
	switch {
	case mi.MemTotalBytes != nil:
		total = *mi.MemTotalBytes
	case mi.MemTotal != nil:
		total = *mi.MemTotal * 1024
	}
	if total == 0 {
		return nil, errors.New("monitor: sampler: /proc/meminfo has no MemTotal")
	}
	return &Sampler{memTotal: total, prev: map[int]reading{}}, nil
}

// MemTotal returns the box's physical memory in bytes, the denominator of
// MemFractionOfBox.
func (s *Sampler) MemTotal() uint64 { return s.memTotal }

// Sample reads the usage of process pid and returns it as a
// ProcessSample taken at now. rates is true when the CPU and disk rates
// are filled in: there was an earlier Sample of this pid, now is after
// it, and no counter went backwards (which means the pid now names
// another process; this Sample then starts afresh). When the process is
// gone the error wraps procid.ErrNoProcess and the pid is forgotten.
func (s *Sampler) Sample(pid int, now time.Time) (ps ProcessSample, rates bool, err error) {
	u, err := procid.UsageOf(pid)
	if err != nil {
		s.Forget(pid)
		return ProcessSample{}, false, fmt.Errorf("monitor: sample: %w", err)
	}
	ps = ProcessSample{
		FDs:              float64(u.FDs),
		Threads:          float64(u.Threads),
		MemFractionOfBox: float64(u.RSSBytes) / float64(s.memTotal),
	}
	s.mu.Lock()
	prev, seen := s.prev[pid]
	s.prev[pid] = reading{t: now, u: u}
	s.mu.Unlock()
	if !seen {
		return ps, false, nil
	}
	dt := now.Sub(prev.t).Seconds()
	if dt <= 0 || u.CPUSeconds < prev.u.CPUSeconds || u.ReadBytes < prev.u.ReadBytes || u.WriteBytes < prev.u.WriteBytes {
		return ps, false, nil
	}
	ps.CPUCores = (u.CPUSeconds - prev.u.CPUSeconds) / dt
	ps.ReadBytesPerSec = float64(u.ReadBytes-prev.u.ReadBytes) / dt
	ps.WriteBytesPerSec = float64(u.WriteBytes-prev.u.WriteBytes) / dt
	return ps, true, nil
}

// Forget drops what the Sampler remembers of pid; call it when a process
// is no longer watched.
func (s *Sampler) Forget(pid int) {
	s.mu.Lock()
	delete(s.prev, pid)
	s.mu.Unlock()
}
