package daemon_test

import (
	"context"
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
	return streamFrom(t, func() message.Message { return env.Recv(q, wait) }, n, inc)
}

// streamFrom is stream for the outputs recv returns one by one.
func streamFrom(t *testing.T, recv func() message.Message, n int, inc int64) (pids []int64, dups int) {
	t.Helper()
	next := int64(0)
	seen := map[int64]bool{}
	for next < int64(n) {
		out := recv()
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

// senderUntil sends ct = 0, 1, … to queue q at a steady pace from its own
// goroutine; stop() ends the stream once at least n are sent and returns
// how many were.
func senderUntil(t *testing.T, env *mmtest.Env, q string, n int, every time.Duration) (stop func() int) {
	var (
		wg   sync.WaitGroup
		sent int
	)
	quit := make(chan struct{})
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for ; ; sent++ {
			if sent >= n {
				select {
				case <-quit:
					return
				default:
				}
			}
			<-tick.C
			env.Send(q, message.Message{"ct": sent})
		}
	})
	return func() int {
		close(quit)
		wg.Wait()
		return sent
	}
}

// outputs collects what comes out of a queue, from its own goroutine,
// until the test ends: waitFor looks at everything collected so far,
// next takes the messages one by one, in order.
type outputs struct {
	mu    sync.Mutex
	msgs  []message.Message
	more  chan struct{} // closed when a message is added
	taken int
}

func collect(t *testing.T, env *mmtest.Env, q string) *outputs {
	o := &outputs{more: make(chan struct{})}
	tr := env.Client()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			m, err := tr.Receive(ctx, q)
			if err != nil {
				if ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond) // retry pacing
				}
				continue
			}
			o.mu.Lock()
			o.msgs = append(o.msgs, m)
			close(o.more)
			o.more = make(chan struct{})
			o.mu.Unlock()
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return o
}

// mark returns how many messages were collected so far.
func (o *outputs) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.msgs)
}

// waitFor waits until at least k messages collected after the first from
// satisfy f.
func (o *outputs) waitFor(t *testing.T, from, k int, what string, f func(message.Message) bool) {
	t.Helper()
	deadline := time.After(wait)
	for {
		o.mu.Lock()
		n := 0
		for _, m := range o.msgs[from:] {
			if f(m) {
				n++
			}
		}
		more := o.more
		o.mu.Unlock()
		if n >= k {
			return
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("no %d %s within %v (%d)", k, what, wait, n)
		}
	}
}

// next returns the next collected message, waiting for it.
func (o *outputs) next(t *testing.T) message.Message {
	t.Helper()
	m, ok := o.nextWithin(wait)
	if !ok {
		t.Fatalf("no output after the %d-th within %v", o.taken, wait)
	}
	return m
}

// nextWithin returns the next collected message, or false if none came
// within d.
func (o *outputs) nextWithin(d time.Duration) (message.Message, bool) {
	deadline := time.After(d)
	for {
		o.mu.Lock()
		if o.taken < len(o.msgs) {
			m := o.msgs[o.taken]
			o.taken++
			o.mu.Unlock()
			return m, true
		}
		more := o.more
		o.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			return nil, false
		}
	}
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

	atLeast := 600
	if v := os.Getenv("MIGRATION_N"); v != "" {
		fmt.Sscan(v, &atLeast)
	}
	out := collect(t, env, "test_out")
	done := senderUntil(t, env, "OtherModule", atLeast, 3*time.Millisecond)
	// Part of the stream passes at each place before the next move: the
	// moves take their time (much more under the race detector), and a
	// place that handled nothing would not show in the sequence.
	handledBy := func(place string, at func(pid int64) bool) {
		t.Helper()
		out.waitFor(t, 0, 10, "messages handled by "+place, func(m message.Message) bool {
			pid, _ := message.Int(m["module_pid"])
			return at(pid)
		})
	}
	handledBy("the first external", func(pid int64) bool { return pid == int64(ext1) })
	env.Configure(cfg(false)) // external → internal
	handledBy("the daemon", func(pid int64) bool { return pid == int64(d.PID()) })
	env.Configure(cfg(true)) // internal → external
	handledBy("a new external", func(pid int64) bool { return pid != int64(d.PID()) && pid != int64(ext1) })
	n := done()
	pids, dups := streamFrom(t, func() message.Message { return out.next(t) }, n, 3)
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
	collected := collect(t, env, "test_out")
	env.Configure(map[string]any{"StatelessProducer": map[string]any{"emit_rate": 1500}})
	// Part of the stream passes at each place before the next move: the
	// moves take their time (much more under the race detector), and a
	// place that handled nothing would not show.
	inside := func(pid int64) bool { return pid == int64(d.PID()) }
	outside := func(pid int64) bool { return pid != int64(d.PID()) }
	const perPlace = 250 // 5 places: at least 1,250 messages (checked below)
	from := 0
	for _, ext := range []bool{true, false, true, false} {
		at, place := inside, "the daemon"
		if !ext {
			at, place = outside, "an external"
		}
		collected.waitFor(t, from, perPlace, "messages handled by "+place, func(m message.Message) bool {
			pid, _ := message.Int(m["module_pid"])
			return at(pid)
		})
		from = collected.mark()
		env.Configure(consumer(ext))
	}
	collected.waitFor(t, from, perPlace, "messages handled by the daemon", func(m message.Message) bool {
		pid, _ := message.Int(m["module_pid"])
		return inside(pid)
	})
	env.Configure(map[string]any{"StatelessProducer": map[string]any{"emit_rate": 0}})
	// Read until the stream has been quiet for a while.
	next, dups := int64(1), 0
	places := map[int64]bool{}
	var history []string
	for {
		out, ok := collected.nextWithin(3 * time.Second)
		if !ok {
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
