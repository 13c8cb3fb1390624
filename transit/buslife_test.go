package transit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/internal/cli"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// A command that only looks (NoStartBus) finds no bus: ErrNoBus, and
// nothing is created.
func TestNoStartBusCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "transit")
	ctx := ctxT(t, 30*time.Second)
	_, err := transit.Open(ctx, transit.Options{TransportDir: dir, NoStartBus: true, Host: "testhost"})
	if !errors.Is(err, transit.ErrNoBus) {
		t.Fatalf("Open with NoStartBus and no bus: got %v, want ErrNoBus", err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Errorf("Open with NoStartBus created %s (stat: %v)", filepath.Dir(dir), err)
	}
}

// StopBus leaves a bus that a client uses, stops one nobody uses, and
// says when there is none. The Transit that started the bus knows it.
func TestStopBus(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	if tr.StartedBus() == 0 {
		t.Errorf("StartedBus: 0 for the Transit that started the bus")
	}
	ctx := ctxT(t, 60*time.Second)
	if err := tr.Send(ctx, "kept", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transit.StopBus(ctx, dir, false); !errors.Is(err, transit.ErrBusInUse) {
		t.Fatalf("StopBus with a client connected: got %v, want ErrBusInUse", err)
	}
	if !bi.Alive() {
		t.Fatal("the bus stopped although a client uses it")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	pid, err := transit.StopBus(ctx, dir, false)
	if err != nil || pid != bi.PID {
		t.Fatalf("StopBus: pid %d, %v; want pid %d, nil", pid, err, bi.PID)
	}
	if bi.Alive() {
		t.Fatal("StopBus returned while the bus still runs")
	}
	if _, err := transit.StopBus(ctx, dir, false); !errors.Is(err, transit.ErrNoBus) {
		t.Fatalf("StopBus with no bus: got %v, want ErrNoBus", err)
	}
	// Nothing lost: a new bus has the message.
	tr2 := open(t, dir, transit.Options{})
	if tr2.StartedBus() == 0 {
		t.Errorf("StartedBus: 0 for the Transit that started the second bus")
	}
	m, err := tr2.TryReceive(ctx, "kept")
	if err != nil || m["n"] != int64(1) {
		t.Fatalf("after StopBus: got %v, %v; want the message sent before", m, err)
	}
}

// A client that leaves just as StopBus asks (a process that started
// the bus, failed, closed its Transit and asks the bus to stop: the bus
// sees the close a moment later) does not keep the bus running: the
// request waits a moment for clients to leave. Here the client is still
// connected when the request arrives (a listener of the stop subject
// sees it) and leaves while it waits.
func TestStopBusWaitsForAClientLeaving(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	listener := busConn(t, dir)
	asked, err := listener.SubscribeSync(transit.BusStopSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Flush(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		pid int
		err error
	}
	stopped := make(chan result, 1)
	go func() {
		pid, err := transit.StopBus(ctx, dir, false)
		stopped <- result{pid, err}
	}()
	// The request reached the bus; its two other clients leave.
	if _, err := asked.NextMsgWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	listener.Close()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-stopped
	if r.err != nil || r.pid != bi.PID {
		t.Fatalf("StopBus as its last client left: pid %d, %v; want pid %d, nil", r.pid, r.err, bi.PID)
	}
	if bi.Alive() {
		t.Fatal("StopBus returned while the bus still runs")
	}
}

// A bus whose directory is removed exits by itself.
func TestBusExitsWhenDirRemoved(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if bi.Alive() {
			syscall.Kill(bi.PID, syscall.SIGKILL)
		}
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() error {
		if bi.Alive() {
			return errors.New("the bus still runs after its directory was removed")
		}
		return nil
	})
}

// An idle bus exits by itself, but not while it holds a message.
func TestBusIdleExitWaitsForMessages(t *testing.T) {
	const idle = 200 * time.Millisecond
	t.Setenv(cli.BusIdleEnv, idle.String()) // the bus started by open inherits it
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	if err := tr.Send(ctx, "q", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	bi, err := transit.ReadBusInfo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// No client, one message: the bus must stay. (Only a wait shows that
	// nothing happens; ten idle times is plenty.)
	time.Sleep(10 * idle)
	if !bi.Alive() {
		log, _ := os.ReadFile(filepath.Join(dir, transit.BusLogFile))
		t.Fatalf("the bus exited while it held a message:\n%s", log)
	}
	tr2 := open(t, dir, transit.Options{})
	if m, err := tr2.TryReceive(ctx, "q"); err != nil || m["n"] != int64(1) {
		t.Fatalf("got %v, %v; want the message", m, err)
	}
	if err := tr2.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() error {
		if bi.Alive() {
			return errors.New("the idle, empty bus still runs")
		}
		return nil
	})
	log, _ := os.ReadFile(filepath.Join(dir, transit.BusLogFile))
	if !strings.Contains(string(log), "no client and no message") {
		t.Errorf("bus.log does not say why the bus stopped:\n%s", log)
	}
}

// Interrupted while the bus starts: the error says so (not "did not
// become ready") and the half-started bus process is stopped.
func TestBusStartInterrupted(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	errc := make(chan error, 1)
	go func() {
		_, err := transit.Open(ctx, transit.Options{TransportDir: dir, Host: "testhost",
			BusCommand: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 600"}})
		errc <- err
	}()
	var pid int
	waitFor(t, 30*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err == nil {
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return err
	})
	t.Cleanup(func() {
		if _, err := transit.ProcessStartTime(pid); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	cancel(errors.New("test interrupt"))
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "start interrupted: test interrupt") || strings.Contains(err.Error(), "did not become ready") {
		t.Fatalf("Open interrupted: got %v, want 'start interrupted: test interrupt'", err)
	}
	waitFor(t, 30*time.Second, func() error {
		if _, err := transit.ProcessStartTime(pid); err == nil {
			return errors.New("the half-started bus still runs")
		}
		return nil
	})
}

// A bus command that exits at once fails Open at once, naming bus.log.
func TestBusExitedBeforeReady(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t, 60*time.Second)
	start := time.Now()
	_, err := transit.Open(ctx, transit.Options{TransportDir: dir, Host: "testhost", BusCommand: []string{"false"}})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("Open with a bus command that exits: got %v, want 'exited before it was ready'", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Open took %v to see the bus command exit", d)
	}
}

// TestOpenConnectsToTheBusOnce: a process that opens a running embedded
// bus connects to it once: the connection that shows the bus live is the
// one the client uses (a restarted external task looked, looked again,
// then connected: three connections on its way to its queue).
func TestOpenConnectsToTheBusOnce(t *testing.T) {
	dir := busDir(t)
	open(t, dir, transit.Options{}) // starts the bus
	dials, restore := transit.CountBusDials()
	defer restore()
	tr := open(t, dir, transit.Options{})
	if tr.StartedBus() != 0 {
		t.Fatal("the second Transit started a bus")
	}
	if n := dials(); n != 1 {
		t.Fatalf("Open of a running bus made %d TCP connections to it; want 1", n)
	}
	// The connection works.
	ctx := ctxT(t, 30*time.Second)
	if err := tr.Send(ctx, "once", message.Message{"n": 1}, transit.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if m, err := tr.TryReceive(ctx, "once"); err != nil || m["n"] != int64(1) {
		t.Fatalf("TryReceive: %v, %v", m, err)
	}
}
