package transit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/multimodule/multimodule/internal/cli"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// roleEnv makes the test binary act as another program: "main" runs the
// multimodule command line (so the embedded bus, started as
// os.Executable() "bus" -T DIR, is this binary), "consumer" runs
// consumerMain. Children inherit "main", so whatever they start is the
// command line too.
const roleEnv = "MULTIMODULE_TEST_ROLE"

func TestMain(m *testing.M) {
	role := os.Getenv(roleEnv)
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzzworker") {
			role = "" // a `go test -fuzz` worker inherits roleEnv=main: it runs the fuzz target
		}
	}
	switch role {
	case "main":
		os.Exit(cli.Main())
	case "consumer":
		os.Setenv(roleEnv, "main")
		os.Exit(consumerMain())
	case "sink":
		os.Setenv(roleEnv, "main")
		os.Exit(sinkMain())
	}
	os.Setenv(roleEnv, "main")
	goleak.VerifyTestMain(m)
}

// consumerMain is a bus consumer process for the tests. It consumes
// MM_QUEUE from the bus in MM_DIR and prints {"n":…, "deliveries":…} for
// each message before handling it. A message with "poison" kills the
// process (SIGKILL, before the ack); one with "block_unless": PATH blocks
// forever unless PATH exists. After MM_COUNT acknowledged messages it
// stops and exits 0.
func consumerMain() int {
	ackWait, _ := time.ParseDuration(os.Getenv("MM_ACKWAIT"))
	maxDeliver, _ := strconv.Atoi(os.Getenv("MM_MAXDELIVER"))
	count, _ := strconv.Atoi(os.Getenv("MM_COUNT"))
	ctx := context.Background()
	tr, err := transit.Open(ctx, transit.Options{TransportDir: os.Getenv("MM_DIR"), AckWait: ackWait, MaxDeliver: maxDeliver, Host: "testhost"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer tr.Close()
	c, err := tr.Consume(ctx, os.Getenv("MM_QUEUE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	done := 0
	for d := range c.C() {
		n, _ := message.Int(d.Msg["n"])
		b, _ := json.Marshal(map[string]any{"n": n, "deliveries": d.Deliveries})
		os.Stdout.Write(append(b, '\n'))
		if message.Truthy(d.Msg["poison"]) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		if p, ok := d.Msg["block_unless"].(string); ok {
			if _, err := os.Stat(p); err != nil {
				select {}
			}
		}
		if err := d.Ack(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if done++; done == count {
			c.Stop()
		}
	}
	return 0
}

// busDir returns a fresh transport directory whose bus (started by the
// first Open) is stopped when the test ends.
func busDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { stopBus(t, dir, syscall.SIGTERM) })
	return dir
}

// stopBus stops the bus that dir/bus.json names and waits until it is gone.
func stopBus(t testing.TB, dir string, sig syscall.Signal) {
	t.Helper()
	bi, err := transit.ReadBusInfo(dir)
	if err != nil || !bi.Alive() {
		return
	}
	syscall.Kill(bi.PID, sig)
	waitFor(t, 20*time.Second, func() error {
		if bi.Alive() {
			return fmt.Errorf("bus pid %d still running after %v", bi.PID, sig)
		}
		return nil
	})
}

// open opens a Transit on the bus in dir, closed when the test ends.
func open(t testing.TB, dir string, opts transit.Options) *transit.Transit {
	t.Helper()
	opts.TransportDir = dir
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&testWriter{t: t, prefix: "transit: "}, nil))
	}
	if opts.Host == "" {
		opts.Host = "testhost"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := transit.Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tr
}

// waitFor polls f until it returns nil or the deadline passes.
func waitFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	delay := time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// child is a process running this test binary in some role.
type child struct {
	cmd   *exec.Cmd
	lines chan string // stdout, line by line; closed at EOF
	done  chan struct{}
	err   error // Wait's result, valid after done
}

// startChild runs this test binary with role and env, killed and waited
// for when the test ends.
func startChild(t testing.TB, role string, args []string, env ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.Stderr = &testWriter{t: t, prefix: role + ": "}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 10000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// line returns the child's next stdout line, failing the test after d.
func (c *child) line(t testing.TB, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child exited before printing a line")
		}
		return l
	case <-time.After(d):
		t.Fatalf("no line from the child after %v", d)
	}
	return ""
}

// wait waits for the child to exit and returns Wait's error.
func (c *child) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(d):
		t.Fatalf("child still running after %v", d)
	}
	return nil
}

type testWriter struct {
	t      testing.TB
	prefix string
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s%s", w.prefix, p)
	return len(p), nil
}

// stopProcess sends pid SIGSTOP and waits until every thread of it is
// stopped: kill returns before the signal takes effect, and a thread
// still running would answer a request meanwhile.
func stopProcess(t testing.TB, pid int) {
	t.Helper()
	if err := stopProcessWait(pid, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// stopProcessWait is stopProcess for goroutines other than the test's:
// it returns what went wrong.
func stopProcessWait(pid int, limit time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(limit)
	for {
		err := stoppedAll(pid)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// stoppedAll says which thread of pid is not stopped (nil: none).
func stoppedAll(pid int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return err
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		if !strings.HasPrefix(rest, "T") {
			return fmt.Errorf("thread %s of pid %d not stopped yet (state %.1s)", task.Name(), pid, rest)
		}
	}
	return nil
}
