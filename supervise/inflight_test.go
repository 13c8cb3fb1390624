package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// helperInFlightKill: mark message 123456789 member 7 of the marker
// named by SUPERVISE_TEST_MARKER as handled, then message 123456790
// member 3 as being handled, and die by SIGKILL in the middle of it.
const helperInFlightKill = "inflight-kill"

func inFlightKill() int {
	m, err := OpenInFlight(os.Getenv("SUPERVISE_TEST_MARKER"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m.Begin(123456789, 7)
	m.End()
	m.Begin(123456790, 3)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// A process killed while handling a message leaves the marker saying
// which one, and its supervisor learns the kill and the message.
func TestInFlightSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "task.inflight")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(Spec{
		Argv: []string{exe, "-test.run=^$"},
		Env:  append(os.Environ(), helperEnv+"="+helperInFlightKill, "SUPERVISE_TEST_MARKER="+path),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p, "helper")
	if code, signaled, known := p.ExitStatus(); !known || !signaled || code != int(syscall.SIGKILL) {
		t.Fatalf("exit status %d signaled=%v known=%v, want killed by SIGKILL", code, signaled, known)
	}
	k, err := ReadInFlight(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Handling() || k.Seq != 123456790 || k.Member != 3 || k.Handled != 1 {
		t.Fatalf("mark %+v, want message 123456790 member 3 being handled, one handled before", k)
	}
	if err := MarkInFlightRecorded(path); err != nil {
		t.Fatal(err)
	}
	if k, err = ReadInFlight(path); err != nil || k.Handling() || k.State != InFlightRecorded || k.Seq != 123456790 || k.Member != 3 || k.Handled != 1 {
		t.Fatalf("after MarkInFlightRecorded: %+v, %v", k, err)
	}
	// The next process keeps writing into the same file.
	m, err := OpenInFlight(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Begin(1<<48-1, 1<<14-1)
	if k, _ := ReadInFlight(path); !k.Handling() || k.Seq != 1<<48-1 || k.Member != 1<<14-1 {
		t.Fatalf("largest position: %+v", k)
	}
	m.Begin(1<<48, 0) // does not fit: nothing in flight
	if k, _ := ReadInFlight(path); k.Handling() {
		t.Fatalf("a position that does not fit reads as handling: %+v", k)
	}
	m.End()
	m.Begin(5, 1)
	m.Pass()
	if k, _ := ReadInFlight(path); k.Handling() || k.State != InFlightDone || k.Seq != 5 || k.Member != 1 || k.Handled != 2 {
		t.Fatalf("after End and Pass: %+v, want message 5 member 1 done, 2 handled in all", k)
	}
}

func TestReadInFlightErrors(t *testing.T) {
	dir := t.TempDir()
	if k, err := ReadInFlight(filepath.Join(dir, "missing")); err != nil || k.Handling() {
		t.Fatalf("missing marker: %+v, %v", k, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a marker"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadInFlight(bad); err == nil {
		t.Fatal("a file that is not a marker was read")
	}
}
