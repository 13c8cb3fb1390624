package daemon_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// TestPlacedConfigRefused: wrong placement keys, and is_external on a
// placed task, are refused with an error naming the task and the key;
// the daemon keeps the config it runs with.
func TestPlacedConfigRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 0)
	cases := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"host not a string", map[string]any{"host": 5}, "task OtherModule: host must be a box name"},
		{"host the cluster scope", map[string]any{"host": "_cluster"}, `task OtherModule: host: \"_cluster\" is reserved`},
		{"two keys", map[string]any{"host": "box1", "hosts": []any{"box2"}}, "task OtherModule: host and hosts both given"},
		{"placement not any", map[string]any{"placement": map[string]any{"any": false}}, "task OtherModule: placement: any must be true"},
		{"placed external", map[string]any{"host": "box1", "is_external": true}, "task OtherModule: is_external refused for a placed task"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env.Configure(map[string]any{"OtherModule": c.cfg})
			stderrHas(t, env, d, c.want)
			alive(t, env, d, 20+i)
		})
	}
}

// TestHostClusterScopeRefused: no box may be called _cluster, the host
// scope of the placed tasks' queues.
func TestHostClusterScopeRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	p := env.Start("--host=_cluster", "-p", "MultiModuleTest")
	if code := p.Wait(t, wait); code == 0 {
		t.Fatal("the daemon started as --host _cluster")
	}
	if !strings.Contains(p.Stderr.String(), "--host _cluster is refused") {
		t.Errorf("stderr does not say why:\n%s", p.Stderr)
	}
}

// TestPlacedTaskOnOneBox: a single box on the embedded bus is the only
// live box: a task placed on any box runs there, from its queue in the
// cluster scope, and `status --all-hosts` lists it WHERE placed.
func TestPlacedTaskOnOneBox(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	route := func(from, to string) any {
		return map[string]any{"match": map[string]any{"source": from}, "forwards": []any{map[string]any{"qname": to}}}
	}
	env.Configure(map[string]any{
		"Counter": map[string]any{"placement": map[string]any{"any": true}},
		"Router":  map[string]any{"routes": []any{route("Producer", "Counter"), route("Counter", "counts")}},
	})
	const n = 20
	for i := 1; i <= n; i++ {
		env.Send("Router", message.Message{"source": "Producer", "seq": i})
	}
	for i := 1; i <= n; i++ {
		if i == 1 {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("daemon stderr:\n%s", tail(d.Stderr.String(), 4000))
				}
			})
		}
		m := env.Recv("counts", wait)
		seq, _ := message.Int(m["seq"])
		count, _ := message.Int(m["count"])
		if seq != int64(i) || count != int64(i) {
			t.Fatalf("count message %d: %v, want seq and count %d", i, m, i)
		}
		if pid, _ := message.Int(m["pid"]); int(pid) != d.PID() {
			t.Errorf("counted by pid %d, want the daemon's %d", pid, d.PID())
		}
	}
	// From the command line: the cluster scope is a host scope to send to.
	if stdout, stderr, code := env.Run("--host=_cluster", "send", "Counter", fmt.Sprintf(`{"seq":%d}`, n+1)); code != 0 {
		t.Fatalf("send --host _cluster: exit %d: %s%s", code, stdout, stderr)
	}
	if m := env.Recv("counts", wait); fmt.Sprint(m["count"]) != fmt.Sprint(n+1) {
		t.Errorf("count after a send to the cluster scope: %v, want %d", m, n+1)
	}
	mmtest.Eventually(t, wait, func() error {
		stdout, stderr, code := env.Run("status", "--all-hosts", "--json", "--wait=20s")
		if code != 0 {
			return fmt.Errorf("status --all-hosts: exit %d: %s%s", code, stdout, stderr)
		}
		var lines []struct {
			Task    string `json:"task"`
			Where   string `json:"where"`
			PID     int    `json:"pid"`
			Running bool   `json:"running"`
		}
		if err := json.Unmarshal([]byte(stdout), &lines); err != nil {
			return fmt.Errorf("%v: %s", err, stdout)
		}
		for _, l := range lines {
			if l.Task == "Counter" {
				if l.Where != "placed" || !l.Running || l.PID != d.PID() {
					return fmt.Errorf("Counter listed as %+v, want placed, running, pid %d", l, d.PID())
				}
				return nil
			}
		}
		return fmt.Errorf("Counter not listed:\n%s", stdout)
	})
	// A clean exit stops the placed task (its last checkpoint saved) and
	// leaves the placement before the bus closes.
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, 2*wait); code != 0 {
		t.Errorf("exit status %d after SIGTERM; stderr:\n%s", code, tail(d.Stderr.String(), 3000))
	}
	if s := d.Stderr.String(); strings.Contains(s, "placed tasks: closing the placement") {
		t.Errorf("closing the placement failed:\n%s", tail(s, 3000))
	}
}

// TestPlacedTaskWaiting: a task pinned to a box that is not live runs
// nowhere; `status --all-hosts` lists it once, not running, waiting, and
// says for which box.
func TestPlacedTaskWaiting(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{"Counter": map[string]any{"host": "nobox"}})
	mmtest.Eventually(t, wait, func() error {
		stdout, stderr, code := env.Run("status", "--all-hosts", "--wait=20s")
		if code != 0 {
			return fmt.Errorf("status --all-hosts: exit %d: %s%s", code, stdout, stderr)
		}
		for _, line := range strings.Split(stdout, "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && f[1] == "Counter" {
				if f[2] != "placed" || !strings.Contains(line, "false") || !strings.Contains(line, "waiting: pinned to box nobox, which is not live") {
					return fmt.Errorf("Counter listed as %q, want placed, not running, waiting for nobox", line)
				}
				return nil
			}
		}
		return fmt.Errorf("Counter not listed:\n%s", stdout)
	})
	// status reads the state directory, which does not say where a placed
	// task runs: it says so.
	stdout, stderr, code := env.Run("status")
	if code != 0 || !strings.Contains(stdout, "placed: runs on the box holding its lease: see status --all-hosts") {
		t.Errorf("status: exit %d, want Counter placed, pointing to --all-hosts; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
