package exectask_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

const wait = 30 * time.Second

func absDir(t testing.TB, dir string) string {
	t.Helper()
	p, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// routes sends everything each task emits to queue out_<task>.
func routes(tasks ...string) map[string]any {
	var rs []any
	for _, name := range tasks {
		rs = append(rs, map[string]any{
			"match":    map[string]any{"source": name},
			"forwards": []any{map[string]any{"qname": "out_" + name}},
		})
	}
	return map[string]any{"routes": rs}
}

// counted is one output of PyCounter / PerlCounter.
type counted struct{ ct, myCt, count, modulePID, hostPID int64 }

// recvCounted receives n outputs of task and checks that they are the
// inputs ct = from … from+n-1, each once and in order, with count going up
// by one from firstCount (the state carried on).
func recvCounted(t *testing.T, env *mmtest.Env, name string, from, n int, inc, firstCount int64) []counted {
	t.Helper()
	var out []counted
	for i := range n {
		m := env.Recv("out_"+name, wait)
		c := counted{}
		c.ct, _ = message.Int(m["ct"])
		c.myCt, _ = message.Int(m["my_ct"])
		c.count, _ = message.Int(m["count"])
		c.modulePID, _ = message.Int(m["module_pid"])
		c.hostPID, _ = message.Int(m["host_pid"])
		if c.ct != int64(from+i) {
			t.Fatalf("%s: got ct %d, want %d (lost or reordered); message %v", name, c.ct, from+i, m)
		}
		if c.myCt != c.ct+inc {
			t.Fatalf("%s: ct %d: got my_ct %d, want %d", name, c.ct, c.myCt, c.ct+inc)
		}
		if want := firstCount + int64(i); c.count != want {
			t.Fatalf("%s: ct %d: got count %d, want %d (state lost?)", name, c.ct, c.count, want)
		}
		out = append(out, c)
	}
	return out
}

func sendCts(env *mmtest.Env, name string, from, n int) {
	for i := range n {
		env.Send(name, message.Message{"ct": from + i})
	}
}

// TestPythonAndPerlTasks: routed messages in, emits out, state kept across
// a kill -9 of the co-process and across a daemon restart.
func TestPythonAndPerlTasks(t *testing.T) {
	needExamples(t, "PyCounter", "PerlCounter")
	env := mmtest.NewEnv(t)
	dir := absDir(t, examples)
	d := env.StartDaemon("-p", dir)
	tasks := map[string]int64{"PyCounter": 1, "PerlCounter": 2}
	env.Configure(map[string]any{
		"PyCounter":   map[string]any{"increment_by": 1},
		"PerlCounter": map[string]any{"increment_by": 2},
		"Router":      routes("PyCounter", "PerlCounter"),
	})
	const n = 5
	pids := map[string]int64{}
	for name, inc := range tasks {
		sendCts(env, name, 0, n)
		got := recvCounted(t, env, name, 0, n, inc, 1)
		pids[name] = got[0].modulePID
		if got[0].hostPID != int64(d.PID()) {
			t.Fatalf("%s: host_pid %d, want the daemon %d (internal)", name, got[0].hostPID, d.PID())
		}
	}

	// kill -9 the co-processes: restarted, state kept, nothing lost.
	for name, inc := range tasks {
		if err := syscall.Kill(int(pids[name]), syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %s (pid %d): %v", name, pids[name], err)
		}
		sendCts(env, name, n, n)
		got := recvCounted(t, env, name, n, n, inc, n+1)
		if got[0].modulePID == pids[name] {
			t.Fatalf("%s: still pid %d after kill -9", name, pids[name])
		}
	}
	if !strings.Contains(d.Stderr.String(), "signal: killed") {
		t.Errorf("daemon stderr does not report the killed co-process:\n%s", d.Stderr)
	}

	// Orderly daemon restart: the state comes back from the state dir.
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("daemon exit code %d, want 0; stderr:\n%s", code, d.Stderr)
	}
	d2 := env.StartDaemon("-p", dir)
	for name, inc := range tasks {
		sendCts(env, name, 2*n, n)
		got := recvCounted(t, env, name, 2*n, n, inc, 2*n+1)
		if got[0].hostPID != int64(d2.PID()) {
			t.Fatalf("%s: host_pid %d, want the new daemon %d", name, got[0].hostPID, d2.PID())
		}
	}
}

// externalPID waits until task runs in its own process and returns its pid.
func externalPID(t *testing.T, env *mmtest.Env, d *mmtest.Proc, name string) int {
	t.Helper()
	var pid int
	env.Eventually(wait, func() error {
		st, err := env.Store().LoadStatus(name)
		if err != nil || st == nil {
			return fmt.Errorf("no status for %s yet (%v)", name, err)
		}
		if !st.External || !st.Identity().Alive() {
			log, _ := os.ReadFile(filepath.Join(env.StateDir, name+".log"))
			errs := d.Stderr.String()
			return fmt.Errorf("%s not running external yet (status %+v); its log:\n%s\ndaemon stderr (end):\n%s", name, st, log, errs[max(0, len(errs)-4000):])
		}
		pid = st.PID
		return nil
	})
	return pid
}

// TestMigration moves an exec task internal → external → internal while
// messages flow: none lost, none reordered, the state goes along.
func TestMigration(t *testing.T) {
	for _, name := range []string{"PyCounter", "PerlCounter"} {
		t.Run(name, func(t *testing.T) {
			needExamples(t, name)
			env := mmtest.NewEnv(t)
			d := env.StartDaemon("-p", absDir(t, examples))
			cfg := func(external bool) map[string]any {
				return map[string]any{name: map[string]any{"increment_by": 3, "is_external": external}}
			}
			env.Configure(map[string]any{"Router": routes(name)})
			env.Configure(cfg(false))
			const n = 20
			sendCts(env, name, 0, n)
			got := recvCounted(t, env, name, 0, n, 3, 1)
			env.Configure(cfg(true))
			sendCts(env, name, n, n) // while it moves out
			ext := externalPID(t, env, d, name)
			sendCts(env, name, 2*n, n)
			env.Configure(cfg(false))
			sendCts(env, name, 3*n, n/2) // while it moves back
			env.Eventually(wait, func() error {
				if syscall.Kill(ext, 0) == nil {
					return fmt.Errorf("external process %d still running after moving back inside", ext)
				}
				return nil
			})
			sendCts(env, name, 3*n+n/2, n-n/2)

			got = append(got, recvCounted(t, env, name, n, 3*n, 3, n+1)...)
			var hosts []int64
			for _, c := range got {
				if len(hosts) == 0 || hosts[len(hosts)-1] != c.hostPID {
					hosts = append(hosts, c.hostPID)
				}
			}
			want := []int64{int64(d.PID()), int64(ext), int64(d.PID())}
			if fmt.Sprint(hosts) != fmt.Sprint(want) {
				t.Fatalf("host pids in order %v, want daemon → external → daemon %v", hosts, want)
			}
		})
	}
}

// TestBrokenTasks: a task that prints garbage, one that exits at once and
// one that never answers its handshake are each reported clearly and
// retried with back-off; the daemon and a good task go on.
func TestBrokenTasks(t *testing.T) {
	needExamples(t, "PyEcho")
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", absDir(t, broken)+","+absDir(t, examples))
	env.Configure(map[string]any{
		"Garbage": map[string]any{}, "ExitsAtOnce": map[string]any{}, "Silent": map[string]any{},
		"PyEcho": map[string]any{}, "Router": routes("PyEcho"),
	})
	env.Send("PyEcho", message.Message{"hello": "world"})
	if m := env.Recv("out_PyEcho", wait); m["hello"] != "world" {
		t.Fatalf("PyEcho: got %v, want the message back", m)
	}
	reports := map[string]string{
		"Garbage":     `malformed line[^\n]*hello, I am not JSON`,
		"ExitsAtOnce": `exit status 3[^\n]*cannot find my config`,
		"Silent":      `no answer within 5s during the handshake`,
	}
	for name, why := range reports {
		// The second attempt proves the retry; its back-off is the host's.
		re := regexp.MustCompile(`task ` + name + ` failed to load \(attempt 2, retrying\):[^\n]*exec task ` + name + `[^\n]*` + why)
		env.Eventually(60*time.Second, func() error {
			if !re.MatchString(d.Stderr.String()) {
				return fmt.Errorf("no report matching %q yet; stderr:\n%s", re, d.Stderr)
			}
			return nil
		})
	}
	if d.Exited() {
		t.Fatalf("daemon exited; stderr:\n%s", d.Stderr)
	}
	env.Send("PyEcho", message.Message{"still": "here"})
	if m := env.Recv("out_PyEcho", wait); m["still"] != "here" {
		t.Fatalf("PyEcho after the broken tasks: got %v", m)
	}
}

// TestNewExecutableWithoutRestart: a task configured before its executable
// exists starts when the file appears, and gets the message that waited.
func TestNewExecutableWithoutRestart(t *testing.T) {
	needExamples(t, "PyEcho")
	env := mmtest.NewEnv(t)
	dir := t.TempDir()
	env.StartDaemon("-p", dir)
	env.Configure(map[string]any{"Router": routes("Late"), "Late": map[string]any{}})
	env.Send("Late", message.Message{"waited": true})
	if err := os.Symlink(absDir(t, filepath.Join(examples, "PyEcho")), filepath.Join(dir, "Late")); err != nil {
		t.Fatal(err)
	}
	if m := env.Recv("out_Late", wait); m["waited"] != true || m["source"] != "Late" {
		t.Fatalf("got %v, want the waiting message emitted by Late", m)
	}
}
