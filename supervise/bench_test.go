package supervise

import (
	"os/exec"
	"syscall"
	"testing"
)

// BenchmarkKillToDone measures how long after SIGKILL Done closes: through
// our Wait goroutine for a started process, through the pidfd in the
// runtime poller for an adopted one. Starting the process is not timed;
// ns/op is the time from Signal(SIGKILL) to Done.
func BenchmarkKillToDone(b *testing.B) {
	b.Run("started", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			p, err := Start(Spec{Argv: []string{"sleep", "100"}})
			if err != nil {
				b.Fatalf("Start: %v", err)
			}
			b.StartTimer()
			if err := p.Signal(syscall.SIGKILL); err != nil {
				b.Fatalf("Signal: %v", err)
			}
			<-p.Done()
		}
	})
	// The adopted process is a plain child of the benchmark, reaped only
	// after Done: the pidfd reports the exit the same way whoever the
	// parent is.
	b.Run("adopted", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			cmd := exec.Command("sleep", "100")
			if err := cmd.Start(); err != nil {
				b.Fatalf("start sleep: %v", err)
			}
			id, err := childIdentity(cmd.Process.Pid)
			if err != nil {
				b.Fatalf("identity: %v", err)
			}
			p, err := Adopt(id, Expect{})
			if err != nil {
				b.Fatalf("Adopt: %v", err)
			}
			b.StartTimer()
			if err := p.Signal(syscall.SIGKILL); err != nil {
				b.Fatalf("Signal: %v", err)
			}
			<-p.Done()
			b.StopTimer()
			_ = cmd.Wait()
			b.StartTimer()
		}
	})
}
