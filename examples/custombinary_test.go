package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) { mmtest.Main(m) }

// TestCustomBinary builds examples/custom — a module of its own with a
// task package and a main that calls multimodule.Main, as docs/tasks.md
// tells a task author to write — and runs its daemon: its own task
// (MyTasks::Greeter) handles a message routed by the built-in Router.
func TestCustomBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary; skipped in -short mode")
	}
	exe := filepath.Join(t.TempDir(), "mymultimodule")
	build := exec.Command("go", "build", "-o", exe, ".")
	build.Dir = "custom"
	// The example's go.mod and go.sum are used as they are: a dependency
	// of the main module they lack fails the build here (go mod tidy in
	// examples/custom mends it).
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build in examples/custom: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(greeterConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	env := mmtest.NewEnv(t)
	env.Exe = exe
	env.StartDaemon("-p", "MyTasks", "-c", cfg)
	env.Send("Greeter", message.Message{"name": "world"})
	if got := env.Recv("greeted", 30*time.Second); got["greeting"] != "howdy, world" {
		t.Fatalf("got %v, want greeting \"howdy, world\"", got)
	}
}

const greeterConfig = `
Greeter:
  word: howdy
Router:
  routes:
    - match:
        source: Greeter
      forwards:
        - qname: greeted
`
