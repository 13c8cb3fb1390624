package daemon_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// routeTo sends everything task emits to queue q.
func routeTo(tasks map[string]string) map[string]any {
	var routes []any
	for task, q := range tasks {
		routes = append(routes, map[string]any{
			"match":    map[string]any{"source": task},
			"forwards": []any{map[string]any{"qname": q}},
		})
	}
	return map[string]any{"routes": routes}
}

// externalPID waits until task runs as its own process and returns its
// pid (from its status file).
func externalPID(t *testing.T, env *mmtest.Env, task string, not int) int {
	t.Helper()
	var pid int
	env.Eventually(wait, func() error {
		st, err := env.Store().LoadStatus(task)
		if err != nil || st == nil {
			return fmt.Errorf("no status for %s yet (%v)", task, err)
		}
		if !st.External || !st.Identity().Alive() || st.PID == not {
			log, _ := os.ReadFile(filepath.Join(env.StateDir, task+".log"))
			return fmt.Errorf("%s not running external yet (status %+v); its log:\n%s", task, st, tail(string(log), 3000))
		}
		pid = st.PID
		return nil
	})
	return pid
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// stream checks what comes out of queue q for the inputs ct = 0..n-1:
// each exactly once (dups counts extra copies, allowed only after a
// crash), in order, my_ct = ct + inc. It returns the module_pid of each.
func stream(t *testing.T, env *mmtest.Env, q string, n int, inc int64) (pids []int64, dups int) {
	t.Helper()
	next := int64(0)
	seen := map[int64]bool{}
	for next < int64(n) {
		out := env.Recv(q, wait)
		ct, _ := message.Int(out["ct"])
		my, _ := message.Int(out["my_ct"])
		if my != ct+inc {
			t.Fatalf("ct %d: my_ct %d, want %d", ct, my, ct+inc)
		}
		if seen[ct] {
			dups++
			continue
		}
		if ct != next {
			t.Fatalf("got ct %d, want %d: lost or reordered", ct, next)
		}
		seen[ct] = true
		pid, _ := message.Int(out["module_pid"])
		pids = append(pids, pid)
		next++
	}
	return pids, dups
}

func TestMixedInternalAndExternal(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"OtherModule":         map[string]any{"increment_by": 1},
		"OtherExternalModule": map[string]any{"increment_by": 2, "is_external": true},
		"Router":              routeTo(map[string]string{"OtherModule": "out_int", "OtherExternalModule": "out_ext"}),
	})
	ext := externalPID(t, env, "OtherExternalModule", 0)
	if ext == d.PID() {
		t.Fatalf("OtherExternalModule runs in the daemon (pid %d)", ext)
	}
	const n = 50
	for i := range n {
		env.Send("OtherModule", message.Message{"ct": i})
		env.Send("OtherExternalModule", message.Message{"ct": i})
	}
	intPIDs, _ := stream(t, env, "out_int", n, 1)
	extPIDs, _ := stream(t, env, "out_ext", n, 2)
	for i := range n {
		if intPIDs[i] != int64(d.PID()) {
			t.Fatalf("internal output %d: module_pid %d, want the daemon %d", i, intPIDs[i], d.PID())
		}
		if extPIDs[i] != int64(ext) {
			t.Fatalf("external output %d: module_pid %d, want the external %d", i, extPIDs[i], ext)
		}
	}
}

func TestStatelessExternalRefused(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{"Incrementer": map[string]any{"is_external": true}})
	env.Eventually(wait, func() error {
		if !strings.Contains(d.Stderr.String(), "only stateful tasks may run external") {
			return fmt.Errorf("no error about the stateless external yet")
		}
		return nil
	})
}

// sender sends ct = 0..n-1 to queue q at a steady pace from its own
// goroutine; wait() returns when all are sent.
func sender(t *testing.T, env *mmtest.Env, q string, n int, every time.Duration) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range n {
			<-tick.C
			env.Send(q, message.Message{"ct": i})
		}
	}()
	return wg.Wait
}

func TestMigrationUnderLoadLosesNothing(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	cfg := func(external bool) map[string]any {
		return map[string]any{"OtherModule": map[string]any{"increment_by": 3, "is_external": external}}
	}
	env.Configure(map[string]any{"Router": routeTo(map[string]string{"OtherModule": "test_out"})})
	env.Configure(cfg(true))
	ext1 := externalPID(t, env, "OtherModule", 0)

	n := 600
	if v := os.Getenv("MIGRATION_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	done := sender(t, env, "OtherModule", n, 3*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // let part of the stream pass before each move (pacing, not synchronisation)
	env.Configure(cfg(false))          // external → internal
	time.Sleep(500 * time.Millisecond)
	env.Configure(cfg(true)) // internal → external
	done()
	pids, dups := stream(t, env, "test_out", n, 3)
	if dups != 0 {
		t.Fatalf("%d duplicated outputs without any crash", dups)
	}
	var places []int64
	for _, p := range pids {
		if len(places) == 0 || places[len(places)-1] != p {
			places = append(places, p)
		}
	}
	if len(places) != 3 || places[0] != int64(ext1) || places[1] != int64(d.PID()) || places[2] == int64(d.PID()) || places[2] == int64(ext1) {
		t.Fatalf("module_pid sequence %v, want external %d → daemon %d → a new external", places, ext1, d.PID())
	}
	st, err := env.Store().LoadState("OtherModule")
	if err != nil {
		t.Fatal(err)
	}
	env.Eventually(wait, func() error {
		st, err = env.Store().LoadState("OtherModule")
		if n2, _ := message.Int(st["message_ct"]); n2 != int64(n) {
			return fmt.Errorf("state message_ct %d, want %d (carried across both moves) (%v)", n2, n, err)
		}
		return nil
	})
}

func TestExternalKilledRepeatedly(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"Router":      routeTo(map[string]string{"OtherModule": "test_out"}),
		"OtherModule": map[string]any{"increment_by": 1, "is_external": true},
	})
	pid := externalPID(t, env, "OtherModule", 0)
	const n = 300
	done := sender(t, env, "OtherModule", n, 2*time.Millisecond)
	for range 10 {
		time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond) // random spacing of the faults
		_ = syscall.Kill(pid, syscall.SIGKILL)
		pid = externalPID(t, env, "OtherModule", pid)
	}
	done()
	_, dups := stream(t, env, "test_out", n, 1)
	t.Logf("10 kill -9s: %d duplicated outputs (redelivery after a crash)", dups)
}

func TestDaemonKilledExternalsKeepRunningAndAreAdopted(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{
		"Router":      routeTo(map[string]string{"OtherModule": "test_out"}),
		"OtherModule": map[string]any{"increment_by": 1, "is_external": true},
	})
	ext := externalPID(t, env, "OtherModule", 0)
	env.Send("OtherModule", message.Message{"ct": 0})
	d.Kill()
	// The daemon is gone; the external goes on working.
	for i := 1; i <= 20; i++ {
		env.Send("OtherModule", message.Message{"ct": i})
	}
	d = env.StartDaemon("-p", "MultiModuleTest")
	for i := 21; i < 40; i++ {
		env.Send("OtherModule", message.Message{"ct": i})
	}
	pids, dups := stream(t, env, "test_out", 40, 1)
	if dups != 0 {
		t.Fatalf("%d duplicates: the external was restarted or doubled", dups)
	}
	for i, p := range pids {
		if p != int64(ext) {
			t.Fatalf("output %d handled by pid %d, want the adopted external %d", i, p, ext)
		}
	}
	d.WaitOutput(t, fmt.Sprintf(`adopted the running external process of OtherModule \(pid %d\)`, ext), wait)
}

func TestExternalConfigChangeWithoutRestart(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	cfg := func(v string) map[string]any {
		return map[string]any{"OtherModule": map[string]any{"increment_by": 1, "is_external": true, "transform": map[string]any{"t": v}}}
	}
	env.Configure(map[string]any{"Router": routeTo(map[string]string{"OtherModule": "test_out"})})
	env.Configure(cfg("first"))
	ext := externalPID(t, env, "OtherModule", 0)
	env.Send("OtherModule", message.Message{"ct": 1})
	if out := env.Recv("test_out", wait); out["t"] != "first" {
		t.Fatalf("got %v, want t=first", out)
	}
	env.Configure(cfg("second"))
	env.Eventually(wait, func() error {
		env.Send("OtherModule", message.Message{"ct": 1})
		out := env.Recv("test_out", wait)
		if pid, _ := message.Int(out["module_pid"]); pid != int64(ext) {
			t.Fatalf("handled by pid %d, want %d: the external was restarted", pid, ext)
		}
		if out["t"] != "second" {
			return fmt.Errorf("t=%v, want second", out["t"])
		}
		return nil
	})
}

func TestCleanlyExitWithAndWithoutExternals(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(map[string]any{"OtherModule": map[string]any{"is_external": true}})
	ext := externalPID(t, env, "OtherModule", 0)
	exit := func(externals bool) {
		env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"control": []any{
			map[string]any{"type": "cleanly_exit", "exit_externals": externals},
		}}})
	}
	exit(false)
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	st, _ := env.Store().LoadStatus("OtherModule")
	if st == nil || st.PID != ext || !st.Identity().Alive() {
		t.Fatalf("external %d did not survive a cleanly_exit without exit_externals (status %+v)", ext, st)
	}
	d = env.StartDaemon("-p", "MultiModuleTest")
	exit(true)
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if st.Identity().Alive() {
		t.Fatalf("external %d still runs after cleanly_exit with exit_externals", ext)
	}
}

// TestMigrationOfAProducersConsumer moves a consumer fed by a producer
// inside the daemon (in-memory delivery, the catch-up fence) back and
// forth under load: every produced message reaches the consumer once, in
// order, and the producer runs only in the daemon.
func TestMigrationOfAProducersConsumer(t *testing.T) {
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", "MultiModuleTest")
	consumer := func(external bool) map[string]any {
		return map[string]any{"OtherModule": map[string]any{"increment_by": 1, "is_external": external}}
	}
	env.Configure(map[string]any{"Router": map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{"source": "StatelessProducer"}, "transform": map[string]any{"ct": " specials/message.emit_ct"},
			"forwards": []any{map[string]any{"qname": "OtherModule"}}},
		map[string]any{"match": map[string]any{"source": "OtherModule"}, "forwards": []any{map[string]any{"qname": "test_out"}}},
	}}})
	env.Configure(consumer(false))
	env.Configure(map[string]any{"StatelessProducer": map[string]any{"emit_rate": 1500}})
	for _, ext := range []bool{true, false, true, false} {
		time.Sleep(400 * time.Millisecond) // let the stream run at each place (pacing, not synchronisation)
		env.Configure(consumer(ext))
	}
	time.Sleep(400 * time.Millisecond)
	env.Configure(map[string]any{"StatelessProducer": map[string]any{"emit_rate": 0}})
	// Read until the stream has been quiet for a while.
	next, dups := int64(1), 0
	places := map[int64]bool{}
	var history []string
	for {
		ctx, cancel := contextWithTimeout(t, 3*time.Second)
		out, err := env.Client().Receive(ctx, "test_out")
		cancel()
		if err != nil {
			break
		}
		ct, _ := message.Int(out["ct"])
		pid, _ := message.Int(out["module_pid"])
		places[pid] = true
		history = append(history, fmt.Sprintf("%d@%d", ct, pid))
		if len(history) > 8 {
			history = history[1:]
		}
		switch {
		case ct < next:
			dups++
		case ct > next:
			var errs []string
			for _, l := range append(d.Stderr.Lines(), d.Stdout.Lines()...) {
				if strings.Contains(l, `"error"`) || strings.Contains(l, "took over") {
					errs = append(errs, l)
				}
			}
			t.Fatalf("got ct %d, want %d: lost or reordered (last outputs ct@pid: %v; daemon %d); daemon errors:\n%s", ct, next, history, d.PID(), strings.Join(errs, "\n"))
		default:
			next++
		}
	}
	if next < 1000 {
		t.Fatalf("only %d messages came through", next-1)
	}
	if dups != 0 {
		t.Fatalf("%d duplicates without any crash", dups)
	}
	if len(places) < 3 || !places[int64(d.PID())] {
		t.Fatalf("handled in %d processes %v, want the daemon and two externals", len(places), places)
	}
	// The state moved with the task every time: it counted every message.
	env.Eventually(wait, func() error {
		st, err := env.Store().LoadState("OtherModule")
		if n, _ := message.Int(st["message_ct"]); n != next-1 {
			return fmt.Errorf("saved message_ct %d, want %d (%v)", n, next-1, err)
		}
		return nil
	})
}
