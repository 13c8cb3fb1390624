package supervise

import (
	"errors"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/procid"
)

// withoutPidfd makes pidfd_open fail with ENOSYS for the rest of the test,
// as on a kernel without pidfds.
func withoutPidfd(t *testing.T) {
	t.Helper()
	saved := openPidfd
	openPidfd = func(int) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { openPidfd = saved })
}

func TestAdoptOrphanAfterParentExits(t *testing.T) {
	tests := []struct {
		name  string
		pidfd bool
	}{
		{"pidfd", true},
		{"slow poll without pidfd", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.pidfd {
				withoutPidfd(t)
			}
			// The helper that started the sleep has exited by now.
			id := orphan(t)
			if !id.Alive() {
				t.Fatalf("%v after its starter exited: Alive got false, want true (it must outlive its parent)", id)
			}
			if sid, err := unix.Getsid(id.PID); err != nil || sid != id.PID {
				t.Errorf("getsid(orphan): got %d (%v), want %d (its own session)", sid, err, id.PID)
			}
			p, err := Adopt(id, Expect{})
			if err != nil {
				t.Fatalf("Adopt(%v): %v", id, err)
			}
			if got := p.Identity(); got.PID != id.PID || got.StartTime != id.StartTime || !slices.Equal(got.Cmdline, id.Cmdline) {
				t.Errorf("Identity(): got %+v, want %+v", got, id)
			}
			if (p.pidfd != nil) != tt.pidfd {
				t.Errorf("watching through a pidfd: got %v, want %v", p.pidfd != nil, tt.pidfd)
			}
			if isDone(p) {
				t.Fatalf("Done of a running adopted process: closed, want open")
			}
			if err := p.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("Signal(SIGKILL): %v", err)
			}
			waitDone(t, p, "killed adopted process")
			if id.Alive() {
				t.Errorf("%v after Done: Alive got true, want false", id)
			}
			if code, signaled, known := p.ExitStatus(); known {
				t.Errorf("ExitStatus of an adopted process: got (%d, %v, known), want unknown", code, signaled)
			}
		})
	}
}

func TestAdoptRefuses(t *testing.T) {
	_, live := child(t)

	dead, deadID := child(t)
	_ = dead.Process.Kill()
	_ = dead.Wait()

	reused := live
	reused.StartTime++
	otherCmd := live
	otherCmd.Cmdline = []string{"not-sleep"}

	tests := []struct {
		name string
		id   procid.Identity
	}{
		{"exited and reaped", deadID},
		{"pid reused (other start time)", reused},
		{"other command line", otherCmd},
		{"zero identity", procid.Identity{}},
		{"no such pid", procid.Identity{PID: 4194304, StartTime: live.StartTime}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Adopt(tt.id, Expect{})
			if !errors.Is(err, ErrGone) {
				if p != nil {
					t.Cleanup(func() { kill(t, p) })
				}
				t.Fatalf("Adopt(%v): got error %v, want one wrapping ErrGone", tt.id, err)
			}
			if p != nil {
				t.Errorf("Adopt(%v): got a Process with the error, want nil", tt.id)
			}
		})
	}
	if !live.Alive() {
		t.Errorf("the live sleep after the refused adoptions: Alive got false, want true")
	}
}

func TestSignalRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (p *Process, bystander procid.Identity)
	}{
		{"adopted handle whose pid was reused (pidfd)", func(t *testing.T) (*Process, procid.Identity) {
			_, id := child(t)
			fake := id
			fake.StartTime++
			p, err := adopt(fake, false)
			if err != nil {
				t.Fatalf("adopt(%v): %v", fake, err)
			}
			return p, id
		}},
		{"adopted handle whose pid was reused (no pidfd)", func(t *testing.T) (*Process, procid.Identity) {
			withoutPidfd(t)
			_, id := child(t)
			fake := id
			fake.StartTime++
			p, err := adopt(fake, false)
			if err != nil {
				t.Fatalf("adopt(%v): %v", fake, err)
			}
			return p, id
		}},
		{"adopted, exited", func(t *testing.T) (*Process, procid.Identity) {
			cmd, id := child(t)
			p, err := Adopt(id, Expect{})
			if err != nil {
				t.Fatalf("Adopt(%v): %v", id, err)
			}
			_ = cmd.Process.Kill()
			waitDone(t, p, "killed adopted process")
			return p, procid.Identity{}
		}},
		{"started, exited", func(t *testing.T) (*Process, procid.Identity) {
			p := start(t, Spec{Argv: []string{"true"}})
			waitDone(t, p, "child")
			return p, procid.Identity{}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, bystander := tt.setup(t)
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
				if err := p.Signal(sig); !errors.Is(err, ErrGone) {
					t.Errorf("Signal(%v): got error %v, want one wrapping ErrGone", sig, err)
				}
			}
			if bystander.PID != 0 && !bystander.Alive() {
				t.Errorf("the process that now has pid %d: Alive got false, want true (it must not be signalled)", bystander.PID)
			}
		})
	}
}
