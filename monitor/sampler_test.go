package monitor

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/procid"
)

// noSuchPID is above the kernel's largest possible pid.
const noSuchPID = 4194304

func newSampler(t *testing.T) *Sampler {
	t.Helper()
	s, err := NewSampler()
	if err != nil {
		t.Fatalf("NewSampler: %v", err)
	}
	return s
}

func TestSamplerSelf(t *testing.T) {
	s := newSampler(t)
	if s.MemTotal() < 1<<20 {
		t.Fatalf("MemTotal: got %d bytes, want at least 1 MiB", s.MemTotal())
	}
	pid := os.Getpid()
	ps, rates, err := s.Sample(pid, time.Now())
	if err != nil {
		t.Fatalf("first Sample: %v", err)
	}
	if rates {
		t.Errorf("first Sample: got rates, want none (no earlier reading)")
	}
	if ps.FDs <= 0 || ps.Threads <= 0 {
		t.Errorf("first Sample: got %v fds and %v threads, want both > 0", ps.FDs, ps.Threads)
	}
	if ps.MemFractionOfBox <= 0 || ps.MemFractionOfBox >= 1 {
		t.Errorf("first Sample: memory fraction %v, want in (0, 1)", ps.MemFractionOfBox)
	}

	// Keep one goroutine busy until a later sample shows CPU being used.
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		x := 0
		for !stop.Load() {
			x++
		}
		runtime.KeepAlive(x)
	}()
	t.Cleanup(func() { stop.Store(true); <-done })

	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, rates, err = s.Sample(pid, time.Now())
		if err != nil {
			t.Fatalf("Sample: %v", err)
		}
		if rates && ps.CPUCores > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CPU seen from a busy goroutine within 10 s: last sample %+v rates=%v", ps, rates)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	if ps.ReadBytesPerSec < 0 || ps.WriteBytesPerSec < 0 {
		t.Errorf("disk rates: got %v and %v, want ≥ 0", ps.ReadBytesPerSec, ps.WriteBytesPerSec)
	}
}

func TestSamplerRates(t *testing.T) {
	pid := os.Getpid()
	tests := []struct {
		name      string
		prev      func(u procid.Usage) procid.Usage // the earlier reading, made from the current one
		prevAge   time.Duration
		wantRates bool
	}{
		{"earlier reading", func(u procid.Usage) procid.Usage { return u }, time.Second, true},
		{"no time passed", func(u procid.Usage) procid.Usage { return u }, 0, false},
		{"cpu went backwards (pid reused)", func(u procid.Usage) procid.Usage { u.CPUSeconds += 1000; return u }, time.Second, false},
		{"reads went backwards", func(u procid.Usage) procid.Usage { u.ReadBytes += 1 << 40; return u }, time.Second, false},
		{"writes went backwards", func(u procid.Usage) procid.Usage { u.WriteBytes += 1 << 40; return u }, time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(t)
			u, err := procid.UsageOf(pid)
			if err != nil {
				t.Fatalf("UsageOf: %v", err)
			}
			now := time.Now()
			s.prev[pid] = reading{t: now.Add(-tt.prevAge), u: tt.prev(u)}
			_, rates, err := s.Sample(pid, now)
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			if rates != tt.wantRates {
				t.Errorf("rates: got %v, want %v", rates, tt.wantRates)
			}
		})
	}
	t.Run("cpu rate is the change over the time between samples", func(t *testing.T) {
		s := newSampler(t)
		u, err := procid.UsageOf(pid)
		if err != nil {
			t.Fatalf("UsageOf: %v", err)
		}
		now := time.Now()
		u.CPUSeconds -= 1000 // pretend 1000 CPU seconds went by in 500 s
		s.prev[pid] = reading{t: now.Add(-500 * time.Second), u: u}
		ps, rates, err := s.Sample(pid, now)
		if err != nil || !rates {
			t.Fatalf("Sample: rates=%v err=%v, want rates and no error", rates, err)
		}
		if ps.CPUCores < 2 || ps.CPUCores > 2.1 {
			t.Errorf("CPUCores: got %v, want 2 (+ what the test used)", ps.CPUCores)
		}
	})
}

func TestSamplerGoneAndForget(t *testing.T) {
	s := newSampler(t)
	s.prev[noSuchPID] = reading{t: time.Now()}
	_, _, err := s.Sample(noSuchPID, time.Now())
	if !errors.Is(err, procid.ErrNoProcess) {
		t.Errorf("Sample of a missing pid: got %v, want an error wrapping procid.ErrNoProcess", err)
	}
	if _, kept := s.prev[noSuchPID]; kept {
		t.Errorf("a missing pid's reading was kept")
	}
	pid := os.Getpid()
	if _, _, err := s.Sample(pid, time.Now()); err != nil {
		t.Fatalf("Sample: %v", err)
	}
	s.Forget(pid)
	if _, rates, err := s.Sample(pid, time.Now().Add(time.Second)); err != nil || rates {
		t.Errorf("Sample after Forget: rates=%v err=%v, want no rates and no error", rates, err)
	}
}
