package procid

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noSuchPID is above the kernel's largest possible pid (PID_MAX_LIMIT is
// 4194304 and pids stay below pid_max), so no process ever has it.
const noSuchPID = 4194304

// startSleep starts `sleep 60` as a child and makes sure it is killed and
// reaped when the test ends.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSelf(t *testing.T) {
	id, err := Self()
	if err != nil {
		t.Fatalf("Self: %v", err)
	}
	if id.PID != os.Getpid() {
		t.Errorf("PID: got %d, want %d", id.PID, os.Getpid())
	}
	if id.StartTime == 0 {
		t.Errorf("StartTime: got 0, want > 0")
	}
	if !slices.Equal(id.Cmdline, os.Args) {
		t.Errorf("Cmdline: got %q, want %q", id.Cmdline, os.Args)
	}
	if !id.Alive() {
		t.Errorf("Self().Alive(): got false, want true")
	}
}

func TestAliveRecordedIdentity(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatalf("Self: %v", err)
	}
	tests := []struct {
		name string
		id   Identity
		want bool
	}{
		{"as recorded", self, true},
		{"command line unknown", Identity{PID: self.PID, StartTime: self.StartTime}, true},
		{"other start time (reused pid)", Identity{PID: self.PID, StartTime: self.StartTime + 1, Cmdline: self.Cmdline}, false},
		{"other command line", Identity{PID: self.PID, StartTime: self.StartTime, Cmdline: []string{"/bin/not-us"}}, false},
		{"zero identity", Identity{}, false},
		{"negative pid", Identity{PID: -1, StartTime: self.StartTime}, false},
		{"no such pid", Identity{PID: noSuchPID, StartTime: self.StartTime}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.Alive(); got != tt.want {
				t.Errorf("%v.Alive(): got %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestChildLifecycle(t *testing.T) {
	cmd := startSleep(t)
	var id Identity
	var err error
	// Between fork and exec the child has no command line of its own yet.
	waitFor(t, "the child to have exec'd sleep", func() bool {
		id, err = Of(cmd.Process.Pid)
		return err == nil && len(id.Cmdline) > 0
	})
	if want := []string{"sleep", "60"}; !slices.Equal(id.Cmdline, want) {
		t.Errorf("child Cmdline: got %q, want %q", id.Cmdline, want)
	}
	if !id.Alive() {
		t.Fatalf("running child: Alive got false, want true")
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	// Killed but not reaped: a zombie, which must count as dead.
	waitFor(t, "the killed (zombie) child to count as dead", func() bool { return !id.Alive() })
	if zid, err := Of(id.PID); err != nil {
		t.Errorf("Of(zombie): got error %v, want its identity", err)
	} else if zid.StartTime != id.StartTime {
		t.Errorf("Of(zombie).StartTime: got %d, want %d", zid.StartTime, id.StartTime)
	}

	_ = cmd.Wait()
	if id.Alive() {
		t.Errorf("reaped child: Alive got true, want false")
	}
	if _, err := Of(id.PID); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Of(reaped child): got %v, want an error wrapping ErrNoProcess", err)
	}
}

func TestOfNoProcess(t *testing.T) {
	for _, pid := range []int{0, -1, noSuchPID} {
		t.Run("pid "+strconv.Itoa(pid), func(t *testing.T) {
			if _, err := Of(pid); !errors.Is(err, ErrNoProcess) {
				t.Errorf("Of(%d): got %v, want an error wrapping ErrNoProcess", pid, err)
			}
			if _, err := UsageOf(pid); !errors.Is(err, ErrNoProcess) {
				t.Errorf("UsageOf(%d): got %v, want an error wrapping ErrNoProcess", pid, err)
			}
		})
	}
}

func TestUsageOf(t *testing.T) {
	child := startSleep(t)
	tests := []struct {
		name string
		pid  int
	}{
		{"self", os.Getpid()},
		{"child sleep", child.Process.Pid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A child sampled right after exec can show no resident pages
			// yet (the kernel's per-CPU RSS counters are folded in lazily),
			// so wait, with a deadline, for the figure to appear.
			var u Usage
			var err error
			waitFor(t, "a resident-memory figure", func() bool {
				u, err = UsageOf(tt.pid)
				return err != nil || u.RSSBytes > 0
			})
			if err != nil {
				t.Fatalf("UsageOf(%d): %v", tt.pid, err)
			}
			if u.FDs <= 0 {
				t.Errorf("FDs: got %d, want > 0", u.FDs)
			}
			if u.Threads <= 0 {
				t.Errorf("Threads: got %d, want > 0", u.Threads)
			}
			if u.RSSBytes == 0 {
				t.Errorf("RSSBytes: got 0, want > 0")
			}
			if u.CPUSeconds < 0 {
				t.Errorf("CPUSeconds: got %v, want >= 0", u.CPUSeconds)
			}
		})
	}
}

// TestUsageOfSelfCounts checks the figures are this process' own: opening
// files raises the fd count, and a Go test binary runs several threads.
func TestUsageOfSelfCounts(t *testing.T) {
	before, err := UsageOf(os.Getpid())
	if err != nil {
		t.Fatalf("UsageOf(self): %v", err)
	}
	const extra = 5
	for range extra {
		f, err := os.Open(os.Args[0])
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { f.Close() })
	}
	after, err := UsageOf(os.Getpid())
	if err != nil {
		t.Fatalf("UsageOf(self): %v", err)
	}
	if after.FDs < before.FDs+extra {
		t.Errorf("FDs after opening %d files: got %d, want >= %d", extra, after.FDs, before.FDs+extra)
	}
	if after.Threads < 2 {
		t.Errorf("Threads of a Go test binary: got %d, want >= 2", after.Threads)
	}
}

func BenchmarkAlive(b *testing.B) {
	id, err := Self()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !id.Alive() {
			b.Fatal("self not alive")
		}
	}
}

func BenchmarkUsageOf(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		if _, err := UsageOf(pid); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUsageOfMatchesProcfs: UsageOf parses /proc itself; for a process
// that does not change (a sleeping child, once its resident pages show),
// it must give exactly what procfs gives.
func TestUsageOfMatchesProcfs(t *testing.T) {
	child := startSleep(t)
	pid := child.Process.Pid
	var u Usage
	waitFor(t, "a resident-memory figure", func() bool {
		var err error
		u, err = UsageOf(pid)
		if err != nil {
			t.Fatalf("UsageOf(%d): %v", pid, err)
		}
		return u.RSSBytes > 0
	})
	p, err := proc(pid)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fds, err := p.FileDescriptorsLen()
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{FDs: fds, Threads: st.NumThreads, RSSBytes: uint64(st.ResidentMemory()), CPUSeconds: st.CPUTime()}
	if pio, err := p.IO(); err == nil {
		want.ReadBytes, want.WriteBytes = pio.ReadBytes, pio.WriteBytes
	}
	if u != want {
		t.Errorf("UsageOf(%d) = %+v, procfs gives %+v", pid, u, want)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			data: "42 (sleep) S 1 42 42 0 -1 4194304 93 0 0 0 7 3 0 0 20 0 1 0 123456 8228864 130 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
			want: procStat{utime: 7, stime: 3, threads: 1, rssPages: 130},
		},
		{
			name: "command name with spaces and parentheses",
			data: "42 (a) b (c) R 1 42 42 0 -1 4194304 93 0 0 0 250 125 0 0 20 0 9 0 123456 8228864 4096 18446744073709551615\n",
			want: procStat{utime: 250, stime: 125, threads: 9, rssPages: 4096},
		},
		{name: "truncated", data: "42 (sleep) S 1 42 42 0 -1 4194304 93 0 0 0 7 3", wantErr: true},
		{name: "no command name", data: "42 sleep S 1", wantErr: true},
		{name: "not a number", data: "42 (sleep) S 1 42 42 0 -1 4194304 93 0 0 0 x 3 0 0 20 0 1 0 123456 8228864 130 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStat: error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("parseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestHoldsFlock: the holder of a flock is found in /proc/locks by the
// file's device and inode; another file, or another process, is not.
func TestHoldsFlock(t *testing.T) {
	dir := t.TempDir()
	locked, other := filepath.Join(dir, "a.lock"), filepath.Join(dir, "b.lock")
	f, err := os.OpenFile(locked, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pid  int
		path string
		want bool
	}{
		{os.Getpid(), locked, true},
		{os.Getpid(), other, false},
		{1, locked, false},
	} {
		got, err := HoldsFlock(tt.pid, tt.path)
		if err != nil || got != tt.want {
			t.Errorf("HoldsFlock(%d, %s): got %v, %v, want %v", tt.pid, tt.path, got, err, tt.want)
		}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if got, err := HoldsFlock(os.Getpid(), locked); err != nil || got {
		t.Errorf("HoldsFlock after unlock: got %v, %v, want false", got, err)
	}
}

// TestUIDs: our own real and effective uids.
func TestUIDs(t *testing.T) {
	r, e, err := UIDs(os.Getpid())
	if err != nil || r != os.Getuid() || e != os.Geteuid() {
		t.Errorf("UIDs(self): got %d, %d, %v, want %d, %d", r, e, err, os.Getuid(), os.Geteuid())
	}
	if _, _, err := UIDs(-1); !errors.Is(err, ErrNoProcess) {
		t.Errorf("UIDs(-1): got %v, want ErrNoProcess", err)
	}
}
