package store

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/procid"
	"go.uber.org/goleak"
)

// helperEnv, when set, makes the test binary act as a helper process (see
// runHelper) instead of running tests.
const helperEnv = "STORE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Getenv("STORE_TEST_DIR")))
	}
	goleak.VerifyTestMain(m)
}

// runHelper is the other process of the lock tests.
//
//	hold:         lock the dir, print "locked", wait for stdin to close, release
//	hold-spawn:   as hold, but first start `sleep 60` and print "child <pid>"
//	try:          lock the dir; print "locked" (exit 0) or the error (exit 3)
func runHelper(mode, dir string) int {
	s, err := Open(dir)
	if err != nil {
		fmt.Println("open:", err)
		return 2
	}
	release, err := s.LockDaemon()
	if mode == "try" {
		if err != nil {
			fmt.Println(err)
			return 3
		}
		fmt.Println("locked")
		release()
		return 0
	}
	if err != nil {
		fmt.Println(err)
		return 3
	}
	if mode == "hold-spawn" {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			fmt.Println("spawn:", err)
			return 2
		}
		fmt.Println("child", c.Process.Pid)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	if err := release(); err != nil {
		fmt.Println(err)
		return 2
	}
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, line by line; closed at EOF
}

// startHelper starts the test binary as a helper in mode on dir and
// makes sure it is killed and reaped when the test ends.
func startHelper(t *testing.T, mode, dir string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "STORE_TEST_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			stdin.Close()
			cmd.Wait()
		}
	})
	return h
}

// expect waits for the helper's next line and checks it has prefix;
// it returns the line.
func (h *helper) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			t.Fatalf("helper output ended, want a line starting %q", prefix)
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("helper said %q, want a line starting %q", line, prefix)
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for the helper to say %q", prefix)
	}
	return ""
}

// wait waits for the helper to exit and returns its exit code.
func (h *helper) wait(t *testing.T) int {
	t.Helper()
	h.stdin.Close()
	err := h.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("wait for helper: %v", err)
	}
	return 0
}

// openStore opens a store in a fresh temporary directory.
func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// readRaw returns a file's bytes, failing the test if it cannot be read.
func readRaw(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return data
}

// writeRaw puts bytes in a file of the store directly, as a crash or an
// operator would.
func writeRaw(t *testing.T, s *Store, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(s.Dir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}

// dirNames lists the directory's file names.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// noTemps fails if temporary files were left in the directory.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	for _, n := range dirNames(t, dir) {
		if isTempName(n) {
			t.Errorf("temporary file %s left behind", n)
		}
	}
}

func deepEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %#v, want %#v", what, got, want)
	}
}

// selfIdentity is procid.Self, here so tests need not import it twice.
func selfIdentity() (procid.Identity, error) { return procid.Self() }
