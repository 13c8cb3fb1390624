package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/mmtest"
)

// TestJournalStreamOutput runs the daemon with its output on a file that
// JOURNAL_STREAM names, as systemd runs a service whose output goes to the
// journal: every line carries a syslog priority (<6> log, <3> error) and
// no timestamp (the journal stamps each entry), and so does the command
// line's own error.
func TestJournalStreamOutput(t *testing.T) {
	env := mmtest.NewEnv(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	fi, err := out.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	stream := fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)
	// A config file that breaks while the daemon runs: an error record
	// (a first start with a broken file is refused before anything runs).
	conf := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, conf, "Example1: {outstr: hi}\n")

	cmd := env.Command("-p", "MultiModuleTest", "-c", conf)
	cmd.Env = append(cmd.Env, stream)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	read := func() string {
		b, err := os.ReadFile(out.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	mmtest.Eventually(t, wait, func() error {
		if s := read(); !strings.Contains(s, "multimodule ready") {
			return fmt.Errorf("no ready line yet:\n%s", s)
		}
		return nil
	})
	writeFile(t, conf, "Example1: [\n")
	mmtest.Eventually(t, wait, func() error {
		if s := read(); !strings.Contains(s, "config file not applied") {
			return fmt.Errorf("no config error yet:\n%s", s)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, read())
		}
	case <-time.After(wait):
		t.Fatalf("no exit within %v after SIGTERM", wait)
	}

	// The command line's error (a bad flag) goes the same way.
	bad := env.Command("--no-such-flag")
	bad.Env = append(bad.Env, stream)
	bad.Stdout, bad.Stderr = out, out
	var ee *exec.ExitError
	if err := bad.Run(); err == nil || !errorsAs(err, &ee) {
		t.Fatalf("a bad flag: %v, want exit status 1", err)
	}

	s := read()
	defer func() {
		if t.Failed() {
			t.Logf("journal output:\n%s", s)
		}
	}()
	prio := regexp.MustCompile(`^<[0-7]>`)
	stamp := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d|"time"|"ts"`)
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if !prio.MatchString(l) {
			t.Errorf("line without a priority prefix: %q", l)
		}
		if stamp.MatchString(l) {
			t.Errorf("line with a timestamp: %q", l)
		}
	}
	for _, want := range []string{"<6>", "LOG multimodule ready", "<3>", "ERROR main: config file not applied", "<3>multimodule: unknown flag: --no-such-flag"} {
		if !strings.Contains(s, want) {
			t.Errorf("journal output lacks %q:\n%s", want, s)
		}
	}
}

func errorsAs(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*target = e
	return ok && e.ExitCode() == 1
}
