package cli_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/multimodule/multimodule/internal/cli"
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
// the script ends.
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
			})
			return nil
		},
	})
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
