package placement_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/multimodule/multimodule/internal/placement"
	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// wait is how long a test waits for an event: generous, the machine may
// be loaded; no test asserts a timing.
const wait = 60 * time.Second

// runServer starts one nats-server with JetStream in this process and
// returns its client URL.
func runServer(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// testLogger logs to the test's log until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// event is something a box's runner did.
type event struct {
	box, kind, task string // kind: start, stop, lost, configure, alert
	cp              placement.Checkpoint
	text            string
	at              time.Time
}

// recRunner is a Runner that runs nothing but records what it is asked
// and saves through the claims when told to.
type recRunner struct {
	box    string
	events chan<- event
	mu     sync.Mutex
	claims map[string]placement.Claim
	fail   int // how many Starts fail
}

func (r *recRunner) Start(ctx context.Context, name string, cfg map[string]any, c placement.Claim) error {
	r.mu.Lock()
	if r.fail > 0 {
		r.fail--
		r.mu.Unlock()
		r.events <- event{box: r.box, kind: "failed", task: name, cp: c.Checkpoint(), at: time.Now()}
		return errors.New("the task would not start")
	}
	r.claims[name] = c
	r.mu.Unlock()
	r.events <- event{box: r.box, kind: "start", task: name, cp: c.Checkpoint(), at: time.Now()}
	go func() {
		<-c.Lost()
		r.mu.Lock()
		if r.claims[name] == c {
			delete(r.claims, name)
		}
		r.mu.Unlock()
		r.events <- event{box: r.box, kind: "lost", task: name, at: time.Now()}
	}()
	return nil
}

// Stop saves the task's state with one more "n" and the position after
// it, as a task that handled one more message would.
func (r *recRunner) Stop(ctx context.Context, name string) error {
	r.mu.Lock()
	c := r.claims[name]
	delete(r.claims, name)
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("stop %s: not running", name)
	}
	err := r.handle(ctx, c)
	r.events <- event{box: r.box, kind: "stop", task: name, at: time.Now()}
	return err
}

func (r *recRunner) Configure(name string, cfg map[string]any) error {
	r.events <- event{box: r.box, kind: "configure", task: name, at: time.Now()}
	return nil
}

// claim is the claim the box runs task with (nil: not running).
func (r *recRunner) claim(task string) placement.Claim {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.claims[task]
}

// handle saves the checkpoint one message further on: n+1 in the state,
// position seq n+1.
func (r *recRunner) handle(ctx context.Context, c placement.Claim) error {
	n := count(c)
	r.mu.Lock()
	st := map[string]any{"n": n + 1}
	r.mu.Unlock()
	err := c.Save(ctx, st, placement.Position{Seq: uint64(n + 1)})
	if err == nil {
		saved.Store(c, n+1)
	}
	return err
}

// saved is the last n each claim saved.
var saved sync.Map

func count(c placement.Claim) int {
	if v, ok := saved.Load(c); ok {
		return v.(int)
	}
	if n, ok := c.Checkpoint().State["n"].(float64); ok {
		return int(n)
	}
	return 0
}

// box is one Manager with its own connection to the bus.
type box struct {
	name   string
	nc     *nats.Conn
	m      *placement.Manager
	run    *recRunner
	cancel context.CancelFunc
}

func startBox(t *testing.T, url, name string, replicas int, events chan event, tune ...func(*placement.Options)) *box {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &box{name: name, nc: nc, cancel: cancel, run: &recRunner{box: name, events: events, claims: map[string]placement.Claim{}}}
	opts := placement.Options{JS: js, Box: name, Replicas: replicas, Runner: b.run,
		Logger: testLogger(t).With("test_box", name),
		Out: func(channel, task, text string, details map[string]any) {
			events <- event{box: name, kind: channel, task: task, text: text, at: time.Now()}
		}}
	for _, f := range tune {
		f(&opts)
	}
	b.m, err = placement.New(ctx, opts)
	if err != nil {
		cancel()
		nc.Close()
		t.Fatalf("start box %s: %v", name, err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if ctx.Err() == nil {
			if err := b.m.Close(cctx); err != nil {
				t.Errorf("close box %s: %v", name, err)
			}
		}
		cancel()
		nc.Close()
	})
	return b
}

// crash is kill -9: the box renews nothing more and its connection
// goes; its keys stay until they run out.
func (b *box) crash() {
	b.cancel()
	b.nc.Close()
}

// pause is a box that stops (SIGSTOP, a long pause): it renews nothing
// more, but keeps its connection and its claims, as when it wakes.
func (b *box) pause() { b.cancel() }

// seeEachOther waits until every box sees all of them live, so that
// their first decisions agree.
func seeEachOther(t *testing.T, boxes ...*box) {
	t.Helper()
	var want []string
	for _, b := range boxes {
		want = append(want, b.name)
	}
	slices.Sort(want)
	deadline := time.Now().Add(wait)
	for _, b := range boxes {
		for !slices.Equal(b.m.Live(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("box %s sees %v live, want %v", b.name, b.m.Live(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// next is the next event that match accepts; the others are dropped.
func next(t *testing.T, events <-chan event, what string, match func(event) bool) event {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case e := <-events:
			t.Logf("event: %s %s %s %s", e.box, e.kind, e.task, e.text)
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, wait)
		}
	}
}

func is(kind, task string) func(event) bool {
	return func(e event) bool { return e.kind == kind && e.task == task }
}

var anyTask = map[string]map[string]any{"Counter": {"placement": map[string]any{"any": true}}}

// TestAnyTaskFailover: an `any` task runs on exactly one of three
// boxes; when that box dies (kill -9: no renewal, keys left) another
// takes it within the TTL and a reaction, from the checkpoint the dead
// one saved, one epoch further.
func TestAnyTaskFailover(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	boxes := map[string]*box{}
	for _, n := range []string{"b1", "b2", "b3"} {
		boxes[n] = startBox(t, url, n, 1, events)
	}
	seeEachOther(t, boxes["b1"], boxes["b2"], boxes["b3"])
	for _, b := range boxes {
		if err := b.m.SetTasks(anyTask); err != nil {
			t.Fatal(err)
		}
	}
	first := next(t, events, "start of Counter", is("start", "Counter"))
	if first.cp.Epoch != 1 || first.cp.Holder != first.box || first.cp.State != nil {
		t.Errorf("first checkpoint %+v, want epoch 1, holder %s, no state", first.cp, first.box)
	}
	holder := boxes[first.box]
	c := holder.run.claim("Counter")
	ctx := t.Context()
	for range 3 {
		if err := holder.run.handle(ctx, c); err != nil {
			t.Fatalf("save: %v", err)
		}
	}
	for n, b := range boxes {
		if n != first.box && b.run.claim("Counter") != nil {
			t.Errorf("box %s runs Counter too", n)
		}
	}
	crashed := time.Now()
	holder.crash()
	second := next(t, events, "take-over of Counter", is("start", "Counter"))
	t.Logf("take-over %s after the crash of %s (information only)", second.at.Sub(crashed).Round(time.Millisecond), first.box)
	if second.box == first.box {
		t.Fatalf("the crashed box %s started Counter again", second.box)
	}
	want := placement.Checkpoint{Holder: second.box, Epoch: 2, Position: placement.Position{Seq: 3}}
	if second.cp.Holder != want.Holder || second.cp.Epoch != want.Epoch || second.cp.Position != want.Position || second.cp.State["n"] != 3.0 {
		t.Errorf("checkpoint taken over %+v, want %+v with n 3", second.cp, want)
	}
	for n, b := range boxes {
		if n != first.box && n != second.box && b.run.claim("Counter") != nil {
			t.Errorf("box %s runs Counter too", n)
		}
	}
}

// TestPreferredFenceAndReturn: `hosts: [b1, b2]` runs on b1; when b1
// stops renewing (paused), b2 takes the task; b1's Save when it wakes
// is fenced (ErrFenced, Lost closed) and changes nothing; when b1 is
// back (restarted), the task moves back to it with b2's last checkpoint.
func TestPreferredFenceAndReturn(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	tasks := map[string]map[string]any{"Counter": {"hosts": []any{"b1", "b2"}}}
	b1 := startBox(t, url, "b1", 1, events)
	b2 := startBox(t, url, "b2", 1, events)
	seeEachOther(t, b1, b2)
	for _, b := range []*box{b2, b1} {
		if err := b.m.SetTasks(tasks); err != nil {
			t.Fatal(err)
		}
	}
	e := next(t, events, "start of Counter", is("start", "Counter"))
	if e.box != "b1" {
		t.Fatalf("Counter started on %s, want b1 (first of hosts)", e.box)
	}
	ctx := t.Context()
	old := b1.run.claim("Counter")
	if err := b1.run.handle(ctx, old); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	b1.pause()
	e = next(t, events, "take-over by b2", is("start", "Counter"))
	t.Logf("take-over %s after b1 stopped renewing (information only)", e.at.Sub(paused).Round(time.Millisecond))
	if e.box != "b2" || e.cp.Epoch != 2 || e.cp.State["n"] != 1.0 || e.cp.Position.Seq != 1 {
		t.Fatalf("take-over %s with %+v, want b2 with epoch 2, n 1, seq 1", e.box, e.cp)
	}
	err := old.Save(ctx, map[string]any{"n": 99}, placement.Position{Seq: 99})
	if !errors.Is(err, placement.ErrFenced) || !strings.Contains(err.Error(), "task Counter") || !strings.Contains(err.Error(), "box b2 holds it now (epoch 2)") {
		t.Errorf("the paused box's Save: %v, want ErrFenced naming the task and b2", err)
	}
	select {
	case <-old.Lost():
	default:
		t.Errorf("Lost not closed after a fenced Save")
	}
	if err := old.Save(ctx, map[string]any{"n": 100}, placement.Position{Seq: 100}); !errors.Is(err, placement.ErrFenced) {
		t.Errorf("Save after Lost: %v, want ErrFenced", err)
	}
	cur := b2.run.claim("Counter")
	if err := b2.run.handle(ctx, cur); err != nil {
		t.Fatalf("the new holder's save: %v", err)
	}
	b1 = startBox(t, url, "b1", 1, events)
	if err := b1.m.SetTasks(tasks); err != nil {
		t.Fatal(err)
	}
	next(t, events, "stop on b2", func(e event) bool { return e.kind == "stop" && e.box == "b2" })
	e = next(t, events, "start on b1", is("start", "Counter"))
	if e.box != "b1" || e.cp.Epoch != 3 || e.cp.State["n"] != 3.0 || e.cp.Position.Seq != 3 {
		t.Errorf("back on %s with %+v, want b1 with epoch 3, n 3 (b2's stop saved one more), seq 3", e.box, e.cp)
	}
}

// TestMoveByConfig: changing `host` moves the task: Stop on the old box
// (its last checkpoint saved), Start on the new one from it.
func TestMoveByConfig(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	b2 := startBox(t, url, "b2", 1, events)
	seeEachOther(t, b1, b2)
	set := func(host string) {
		for _, b := range []*box{b1, b2} {
			if err := b.m.SetTasks(map[string]map[string]any{"Counter": {"host": host, "x": 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	set("b1")
	e := next(t, events, "start of Counter", is("start", "Counter"))
	if e.box != "b1" {
		t.Fatalf("started on %s, want b1", e.box)
	}
	if err := b1.run.handle(t.Context(), b1.run.claim("Counter")); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	set("b2")
	next(t, events, "stop on b1", func(e event) bool { return e.kind == "stop" && e.box == "b1" })
	e = next(t, events, "start on b2", is("start", "Counter"))
	t.Logf("move took %s from the config change to the start on b2 (information only)", e.at.Sub(moved).Round(time.Millisecond))
	if e.box != "b2" || e.cp.Epoch != 2 || e.cp.State["n"] != 2.0 || e.cp.Position.Seq != 2 {
		t.Errorf("moved to %s with %+v, want b2 with epoch 2, n 2, seq 2", e.box, e.cp)
	}
}

// TestPinnedToDeadBox: a task pinned to a box that is not live runs
// nowhere; one alert says so, not one per box or per decision; when the
// box comes, it runs there.
func TestPinnedToDeadBox(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	b2 := startBox(t, url, "b2", 1, events)
	seeEachOther(t, b1, b2)
	tasks := map[string]map[string]any{"Counter": {"host": "b3"}, "Other": {"host": "b1"}}
	for _, b := range []*box{b1, b2} {
		if err := b.m.SetTasks(tasks); err != nil {
			t.Fatal(err)
		}
	}
	a := next(t, events, "alert", is("alert", "Counter"))
	if a.text != "task Counter is pinned to box b3, which is not live: its messages wait" {
		t.Errorf("alert %q", a.text)
	}
	// More decisions on both boxes: the config again, another task moved.
	tasks["Other"] = map[string]any{"host": "b2"}
	for _, b := range []*box{b1, b2} {
		if err := b.m.SetTasks(tasks); err != nil {
			t.Fatal(err)
		}
	}
	var seen []event
	for {
		e := next(t, events, "Other on b2", func(event) bool { return true })
		seen = append(seen, e)
		if e.kind == "start" && e.task == "Other" && e.box == "b2" {
			break
		}
	}
	for _, e := range seen {
		if e.task == "Counter" {
			t.Errorf("%s on box %s for Counter, pinned to a box that is not live", e.kind, e.box)
		}
	}
	startBox(t, url, "b3", 1, events).m.SetTasks(tasks)
	if e := next(t, events, "start of Counter", is("start", "Counter")); e.box != "b3" {
		t.Errorf("Counter started on %s, want b3", e.box)
	}
}

// TestSaveUnencodable: state JSON cannot encode is an error naming the
// task, not a fence: the claim is kept.
func TestSaveUnencodable(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"host": "b1"}}); err != nil {
		t.Fatal(err)
	}
	next(t, events, "start", is("start", "Counter"))
	c := b1.run.claim("Counter")
	err := c.Save(t.Context(), map[string]any{"n": math.NaN()}, placement.Position{Seq: 1})
	if err == nil || errors.Is(err, placement.ErrFenced) || !strings.Contains(err.Error(), "task Counter: save: its state cannot be encoded as JSON") {
		t.Errorf("Save of NaN: %v, want an encoding error naming the task", err)
	}
	select {
	case <-c.Lost():
		t.Errorf("Lost closed by a bad state")
	default:
	}
	if err := c.Save(t.Context(), map[string]any{"n": 1}, placement.Position{Seq: 1}); err != nil {
		t.Errorf("Save after it: %v", err)
	}
}

// TestSetTasksErrors: a wrong placement is an error naming the task, and
// the task keeps its previous placement.
func TestSetTasksErrors(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"host": "b1"}, "Plain": {"x": 1}}); err != nil {
		t.Fatal(err)
	}
	next(t, events, "start", is("start", "Counter"))
	err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"host": "b1", "hosts": []any{"b2"}}})
	if err == nil || err.Error() != "task Counter: host and hosts both given: use one" {
		t.Errorf("SetTasks: %v", err)
	}
	if err := b1.m.SetTasks(map[string]map[string]any{".x": {"host": "b1"}}); err == nil || !strings.Contains(err.Error(), "task .x") {
		t.Errorf("SetTasks with a name beginning with a dot: %v", err)
	}
	// The bad config kept Counter; this one (without it) stops it.
	next(t, events, "stop", is("stop", "Counter"))
}

// TestClusterFailover: on three clustered nats-server processes with
// buckets kept by all three, a task fails over from a crashed box to
// the other.
func TestClusterFailover(t *testing.T) {
	c := mmtest.NewCluster(t, 3)
	events := make(chan event, 100)
	b1 := startBox(t, c.Nodes[0].URL(), "b1", 3, events)
	b2 := startBox(t, c.Nodes[1].URL(), "b2", 3, events)
	seeEachOther(t, b1, b2)
	for _, b := range []*box{b1, b2} {
		if err := b.m.SetTasks(anyTask); err != nil {
			t.Fatal(err)
		}
	}
	e := next(t, events, "start", is("start", "Counter"))
	holder, other := b1, b2
	if e.box == "b2" {
		holder, other = b2, b1
	}
	if err := holder.run.handle(t.Context(), holder.run.claim("Counter")); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	holder.crash()
	e = next(t, events, "take-over", is("start", "Counter"))
	t.Logf("take-over on the cluster %s after the crash (information only)", e.at.Sub(crashed).Round(time.Millisecond))
	if e.box != other.name || e.cp.Epoch != 2 || e.cp.State["n"] != 1.0 {
		t.Errorf("take-over by %s with %+v, want %s with epoch 2, n 1", e.box, e.cp, other.name)
	}
}

// TestLeaseLostOnRenewal: a lease that is gone when the box renews it
// (it ran out while the box was paused, or another box holds it) loses
// the task: Lost is closed, and the box takes the task again, one
// epoch further, since it is still the one it should run on.
func TestLeaseLostOnRenewal(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"host": "b1"}}); err != nil {
		t.Fatal(err)
	}
	next(t, events, "start", is("start", "Counter"))
	old := b1.run.claim("Counter")
	if err := b1.run.handle(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	leases := rawKV(t, url, placement.LeasesBucket)
	if err := leases.Delete(t.Context(), "Counter"); err != nil {
		t.Fatal(err)
	}
	next(t, events, "lost", is("lost", "Counter"))
	e := next(t, events, "start again", is("start", "Counter"))
	if e.box != "b1" || e.cp.Epoch != 2 || e.cp.State["n"] != 1.0 {
		t.Errorf("started again on %s with %+v, want b1 with epoch 2 and n 1", e.box, e.cp)
	}
	if err := old.Save(t.Context(), map[string]any{"n": 9}, placement.Position{Seq: 9}); !errors.Is(err, placement.ErrFenced) {
		t.Errorf("Save through the lost claim: %v, want ErrFenced", err)
	}
}

// TestRestartTakesOwnLease: a box that restarts (after kill -9) before
// its old lease runs out takes its task at once: the lease is its own
// from before. The lease TTL here is longer than the test waits.
func TestRestartTakesOwnLease(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	long := func(o *placement.Options) { o.LeaseTTL = 10 * time.Minute }
	tasks := map[string]map[string]any{"Counter": {"host": "b1"}}
	b1 := startBox(t, url, "b1", 1, events, long)
	if err := b1.m.SetTasks(tasks); err != nil {
		t.Fatal(err)
	}
	next(t, events, "start", is("start", "Counter"))
	if err := b1.run.handle(t.Context(), b1.run.claim("Counter")); err != nil {
		t.Fatal(err)
	}
	b1.crash()
	b1 = startBox(t, url, "b1", 1, events, long)
	if err := b1.m.SetTasks(tasks); err != nil {
		t.Fatal(err)
	}
	e := next(t, events, "start after the restart", is("start", "Counter"))
	if e.cp.Epoch != 2 || e.cp.State["n"] != 1.0 {
		t.Errorf("restarted with %+v, want epoch 2 and n 1", e.cp)
	}
}

// TestTwinBox: a second daemon with the same box name is an alert.
func TestTwinBox(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	startBox(t, url, "b1", 1, events)
	startBox(t, url, "b1", 1, events)
	e := next(t, events, "alert", func(e event) bool { return e.kind == "alert" })
	if !strings.HasPrefix(e.text, "another daemon runs as box b1") {
		t.Errorf("alert %q", e.text)
	}
}

// rawKV is a bucket seen through a connection of the test's own.
func rawKV(t *testing.T, url, bucket string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestStartFailsRetried: a Start that fails releases the lease and is
// tried again after a back-off, with one alert for the run of failures.
func TestStartFailsRetried(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	b1.run.fail = 2
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"host": "b1"}}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for {
		e := next(t, events, "start", func(event) bool { return true })
		seen[e.kind]++
		if e.kind == "start" {
			if e.cp.Epoch != 3 {
				t.Errorf("started with epoch %d, want 3 (two take-overs before)", e.cp.Epoch)
			}
			break
		}
	}
	if seen["failed"] != 2 || seen["alert"] != 1 {
		t.Errorf("events %v, want 2 failed starts and 1 alert", seen)
	}
}

// TestCloseHandsOn: a box that shuts down stops its tasks, releases
// their leases and deletes its key, so another box takes them at once,
// not after the TTLs (10 minutes here).
func TestCloseHandsOn(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	long := func(o *placement.Options) { o.LeaseTTL, o.BoxTTL = 10*time.Minute, 10*time.Minute }
	b1 := startBox(t, url, "b1", 1, events, long)
	b2 := startBox(t, url, "b2", 1, events, long)
	seeEachOther(t, b1, b2)
	tasks := map[string]map[string]any{"Counter": {"hosts": []any{"b1", "b2"}}}
	for _, b := range []*box{b1, b2} {
		if err := b.m.SetTasks(tasks); err != nil {
			t.Fatal(err)
		}
	}
	if e := next(t, events, "start", is("start", "Counter")); e.box != "b1" {
		t.Fatalf("started on %s, want b1", e.box)
	}
	closed := time.Now()
	if err := b1.m.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b1.cancel()
	next(t, events, "stop on b1", is("stop", "Counter"))
	e := next(t, events, "start on b2", is("start", "Counter"))
	t.Logf("hand-on at shutdown took %s (information only)", e.at.Sub(closed).Round(time.Millisecond))
	if e.box != "b2" || e.cp.Epoch != 2 || e.cp.State["n"] != 1.0 {
		t.Errorf("taken by %s with %+v, want b2 with epoch 2 and n 1 (the stop's last save)", e.box, e.cp)
	}
}

// TestConfigureInPlace: a config change that keeps the task on its box
// goes to the Runner's Configure, without a stop or a take-over.
func TestConfigureInPlace(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	b1 := startBox(t, url, "b1", 1, events)
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"hosts": []any{"b1"}, "x": 1}}); err != nil {
		t.Fatal(err)
	}
	next(t, events, "start", is("start", "Counter"))
	if err := b1.m.SetTasks(map[string]map[string]any{"Counter": {"hosts": []any{"b1", "b2"}, "x": 2}}); err != nil {
		t.Fatal(err)
	}
	e := next(t, events, "configure", func(e event) bool { return e.task == "Counter" })
	if e.kind != "configure" {
		t.Errorf("%s after a config change that keeps the task here, want configure", e.kind)
	}
}

// logCapture keeps what a logger wrote, for a test to look for a record.
type logCapture struct {
	mu sync.Mutex
	b  strings.Builder
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Write(p)
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// A box whose watches stop delivering (the consumers feeding them are
// gone, as when the NATS server that held them dies: the client library
// notices only after 10 s without heartbeats, and its own restart fails
// while a bucket has no leader) watches again once its own renewals stop
// coming back, and acts on what changed meanwhile: here the box running
// the task died, and its key and lease ran out before the new watches
// read the buckets.
func TestStalledWatchesWatchedAgain(t *testing.T) {
	url := runServer(t)
	events := make(chan event, 100)
	logs := &logCapture{}
	a := startBox(t, url, "boxA", 1, events, func(o *placement.Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	// boxB's key and lease run out a second after it dies, before boxA
	// (3 s) misses its own renewals.
	b := startBox(t, url, "boxB", 1, events, func(o *placement.Options) {
		o.BoxTTL, o.BoxRenew, o.LeaseTTL, o.LeaseRenew = time.Second, 300*time.Millisecond, time.Second, 300*time.Millisecond
	})
	seeEachOther(t, a, b)
	tasks := map[string]map[string]any{"Counter": {"hosts": []any{"boxB", "boxA"}}}
	for _, x := range []*box{a, b} {
		if err := x.m.SetTasks(tasks); err != nil {
			t.Fatal(err)
		}
	}
	if e := next(t, events, "start of Counter", is("start", "Counter")); e.box != "boxB" {
		t.Fatalf("Counter started on %s, want boxB (first of hosts)", e.box)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// The watches lose their consumers.
	for _, bucket := range []string{placement.BoxesBucket, placement.LeasesBucket} {
		s, err := js.Stream(ctx, "KV_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		var deleted int
		for ci := range s.ListConsumers(ctx).Info() {
			if err := s.DeleteConsumer(ctx, ci.Name); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
		if deleted == 0 {
			t.Fatalf("no consumer feeds the watches of %s", bucket)
		}
	}
	b.crash()
	if e := next(t, events, "take-over of Counter", is("start", "Counter")); e.box != "boxA" {
		t.Fatalf("Counter started on %s, want boxA", e.box)
	}
	if !strings.Contains(logs.String(), "watching the boxes and leases again") {
		t.Errorf("boxA took Counter over without watching the boxes again:\n%s", logs.String())
	}
}
