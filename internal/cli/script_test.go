package cli_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"github.com/rogpeppe/go-internal/testscript"

	_ "github.com/multimodule/multimodule/examples/testtasks" // the MultiModuleTest namespace, for daemons in scripts

	"github.com/multimodule/multimodule/internal/cli"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// TestMain lets the test binary act as the multimodule command inside
// scripts (and as the embedded bus those commands start).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"multimodule": func() { os.Exit(cli.Main()) },
	})
}

// TestScripts runs testdata/script/*.txtar. Each script works in its own
// $WORK (use -s state); every bus its commands started is stopped when
// the script ends, and then every process still naming $WORK on its
// command line is killed.
//
// Commands scripts have besides testscript's own:
//
//	exitcode N PROG ARGS...  run PROG like exec; its exit status must be N
//	noprocs                  wait (up to 60s) until no live process names
//	                         $WORK on its command line; fail naming those left
//	procs                    at least one live process names $WORK
//	waitdaemon DIR           wait (up to 60s) until the daemon of state DIR runs
//	waitfile FILE            wait (up to 60s) until FILE exists
//	holdlock FILE            hold an exclusive flock on FILE until the script ends
//	busurl DIR VAR           set VAR to the URL, with its token, of the bus in DIR
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Defer(func() {
				// Every bus.json under $WORK names a bus to stop.
				filepath.WalkDir(env.WorkDir, func(path string, d fs.DirEntry, err error) error {
					if err == nil && d.Name() == transit.BusInfoFile {
						stopScriptBus(env.T(), filepath.Dir(path))
					}
					return nil
				})
				for _, p := range procsNaming(env.WorkDir) {
					env.T().Log("killing a process left running: " + p)
					if pid, err := strconv.Atoi(strings.Fields(p)[0]); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":   cmdExitcode,
			"noprocs":    cmdNoprocs,
			"procs":      cmdProcs,
			"waitdaemon": cmdWaitdaemon,
			"waitfile":   cmdWaitfile,
			"holdlock":   cmdHoldlock,
			"busurl":     cmdBusurl,
		},
	})
}

func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG ARGS...")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	ts.Logf("[exit status %d]", got)
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// procsNaming lists the live processes (not this one, not zombies) whose
// command line contains dir, as "pid cmdline".
func procsNaming(dir string) []string {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range all {
		if p.PID == os.Getpid() {
			continue
		}
		st, err := p.Stat()
		if err != nil || st.State == "Z" || st.State == "X" {
			continue
		}
		cmd, _ := p.CmdLine()
		line := strings.Join(cmd, " ")
		if strings.Contains(line, dir) {
			out = append(out, strconv.Itoa(p.PID)+" "+line)
		}
	}
	return out
}

func cmdNoprocs(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("use procs")
	}
	work := ts.Getenv("WORK")
	deadline := time.Now().Add(60 * time.Second)
	delay := 10 * time.Millisecond
	for {
		left := procsNaming(work)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("processes of this script still running after 60s:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func cmdProcs(ts *testscript.TestScript, neg bool, args []string) {
	left := procsNaming(ts.Getenv("WORK"))
	if neg && len(left) > 0 {
		ts.Fatalf("processes of this script running:\n%s", strings.Join(left, "\n"))
	}
	if !neg && len(left) == 0 {
		ts.Fatalf("no process of this script runs")
	}
}

func cmdWaitdaemon(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitdaemon DIR")
	}
	dir := ts.MkAbs(args[0])
	deadline := time.Now().Add(60 * time.Second)
	delay := 10 * time.Millisecond
	for {
		if _, err := os.Stat(dir); err == nil {
			if st, err := store.Open(dir); err == nil {
				if m, _ := st.LoadStatus("main"); m != nil && m.Running() {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("no daemon running under %s after 60s", dir)
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	deadline := time.Now().Add(60 * time.Second)
	delay := 10 * time.Millisecond
	for {
		if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s does not exist after 60s", args[0])
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func cmdHoldlock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdlock FILE")
	}
	path := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(filepath.Dir(path), 0o700))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	ts.Check(err)
	ts.Check(syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
	ts.Defer(func() { f.Close() })
}

func cmdBusurl(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: busurl DIR VAR")
	}
	dir := ts.MkAbs(args[0])
	bi, err := transit.ReadBusInfo(dir)
	ts.Check(err)
	tok, err := os.ReadFile(filepath.Join(dir, transit.BusTokenFile))
	ts.Check(err)
	ts.Setenv(args[1], strings.Replace(bi.URL, "nats://", "nats://"+strings.TrimSpace(string(tok))+"@", 1))
}

// stopScriptBus stops the bus named by dir/bus.json: SIGTERM, then
// SIGKILL if it is still running after 10s.
func stopScriptBus(t testscript.T, dir string) {
	bi, err := transit.ReadBusInfo(dir)
	if err != nil || !bi.Alive() {
		return
	}
	syscall.Kill(bi.PID, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for bi.Alive() {
		if time.Now().After(deadline) {
			t.Log("bus did not stop on SIGTERM; killing it")
			syscall.Kill(bi.PID, syscall.SIGKILL)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
