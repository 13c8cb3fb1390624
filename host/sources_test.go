package host_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// sendingSource is a task source whose lookup sends a message, as an
// exec-task directory does when it logs (a describe that failed) in an
// external process, which forwards its log records to the daemon.
type sendingSource struct {
	registry.Source
	h atomic.Pointer[host.Host]
}

func (s *sendingSource) Lookup(name string) (task.Definition, bool) {
	if h := s.h.Load(); h != nil && name == "Keeper" {
		_ = h.Send(context.Background(), "Sink", message.Message{"looked_up": name})
	}
	return s.Source.Lookup(name)
}

// TestConfigureDoesNotAskSourcesUnderItsLock: a source may take time and
// log while it answers, and logging may send; ConfigureAll must not hold
// the host's lock while it asks (it did for is_external, and an external
// process hung at its start when its exec task's describe logged).
func TestConfigureDoesNotAskSourcesUnderItsLock(t *testing.T) {
	rec := newRecorder()
	env := mmtest.NewEnv(t)
	src := &sendingSource{Source: testRegistry(rec).Namespace("T")}
	h, err := host.New(host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{registry.Default().Namespace(task.Builtin), src},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = h.Run(ctx) }()
	var deadlocked atomic.Bool
	t.Cleanup(func() {
		if deadlocked.Load() {
			return // Shutdown would wait for the lock forever
		}
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = h.Shutdown(sctx)
		cancel()
		<-runDone
	})
	src.h.Store(h)
	done := make(chan error, 1)
	go func() { done <- h.Configure("Keeper", map[string]any{"is_external": true}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		deadlocked.Store(true)
		t.Fatal("Configure of an external task did not return within 20s: it asks its sources under the host's lock, and the source's send needs that lock")
	}
}
