package supervise

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/procid"
)

// ignoringTERM starts a process that ignores SIGTERM and waits until it
// does (the trap is set before it says "ready").
func ignoringTERM(t *testing.T) *Process {
	t.Helper()
	log := filepath.Join(t.TempDir(), "task.log")
	p := start(t, Spec{
		Argv:    []string{"sh", "-c", `trap "" TERM; echo ready; exec sleep 100`},
		LogPath: log,
	})
	waitFor(t, "the child to ignore SIGTERM", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "ready")
	})
	return p
}

func TestStop(t *testing.T) {
	tests := []struct {
		name    string
		launch  func(t *testing.T) *Process
		wantSig syscall.Signal // what it died of; 0 when that cannot be known
	}{
		{"started, exits on SIGTERM", func(t *testing.T) *Process {
			return start(t, Spec{Argv: []string{"sleep", "100"}})
		}, syscall.SIGTERM},
		{"started, ignores SIGTERM", ignoringTERM, syscall.SIGKILL},
		{"started, already exited", func(t *testing.T) *Process {
			// Killed by a signal of its own: not SIGINT, which a shell
			// running the tests as a background job passes on ignored
			// (the child then exits 0), nor one that Stop sends.
			p := start(t, Spec{Argv: []string{"sh", "-c", "kill -USR1 $$"}})
			waitDone(t, p, "child")
			return p
		}, syscall.SIGUSR1},
		{"adopted", func(t *testing.T) *Process {
			id := orphan(t)
			p, err := Adopt(id, Expect{})
			if err != nil {
				t.Fatalf("Adopt(%v): %v", id, err)
			}
			return p
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.launch(t)
			ctx, cancel := context.WithTimeout(t.Context(), deadline)
			defer cancel()
			if err := p.Stop(ctx, 200*time.Millisecond); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if !isDone(p) {
				t.Fatalf("Done after Stop returned nil: open, want closed")
			}
			if p.Identity().Alive() {
				t.Errorf("Identity().Alive() after Stop: got true, want false")
			}
			code, signaled, known := p.ExitStatus()
			if tt.wantSig == 0 {
				if known {
					t.Errorf("ExitStatus: got (%d, %v, known), want unknown", code, signaled)
				}
				return
			}
			if !known || !signaled || code != int(tt.wantSig) {
				t.Errorf("ExitStatus: got (%d, %v, %v), want (%d, true, true)", code, signaled, known, int(tt.wantSig))
			}
		})
	}
}

func TestStopBoundedByContext(t *testing.T) {
	p := ignoringTERM(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := p.Stop(ctx, time.Hour) // the grace outlasts the context
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with a context ending within the grace: got error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if isDone(p) {
		t.Errorf("Done after a Stop cut short within the grace: closed, want open (SIGTERM is ignored)")
	}
	// The command line changed when sh exec'd sleep; pid and start time
	// still name the process.
	id := p.Identity()
	if running := (procid.Identity{PID: id.PID, StartTime: id.StartTime}).Alive(); !running {
		t.Errorf("%v after a Stop cut short: Alive got false, want true", id)
	}
}
