package host_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
)

// TestConfigChangedWhileLoading: a task moved out (is_external) while it
// is still being loaded — its co-process starting, say — must not stay
// hosted here. The chaos run found it: an exec task migrated back inside
// and, a moment later, out again stayed inside for good, and the external
// supervisor waited forever for the daemon to let it go.
func TestConfigChangedWhileLoading(t *testing.T) {
	env := mmtest.NewEnv(t)
	building := make(chan struct{}, 1)
	release := make(chan struct{})
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Slow", Stateful: true, New: func() (task.Task, error) {
		select {
		case building <- struct{}{}:
		default:
		}
		<-release
		return &probe{rec: newRecorder(), name: "Slow"}, nil
	}})
	changed := make(chan string, 16)
	h, _ := runHost(t, host.Options{
		Transit: env.Client(),
		Store:   env.Store(),
		Sources: registry.Sources{reg.Namespace("T")},
		OnConfigChanged: func(name string, _ map[string]any) {
			changed <- name
		},
	})

	loaded := make(chan error, 1)
	go func() { loaded <- h.Configure("Slow", map[string]any{}) }()
	select {
	case <-building:
	case <-time.After(30 * time.Second):
		t.Fatal("the task is not being loaded")
	}
	if err := h.Configure("Slow", map[string]any{"is_external": true}); err != nil {
		t.Fatal(err)
	}
	if !h.Hosts("Slow") {
		t.Fatal("Hosts: got false while the task is loading, want true")
	}
	close(release)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	mmtest.Eventually(t, 30*time.Second, func() error {
		if h.Hosts("Slow") || slices.Contains(h.Loaded(), "Slow") {
			return fmt.Errorf("Slow still hosted here (loaded %v), configured is_external", h.Loaded())
		}
		return nil
	})
	// The supervisor hears of the task again once it is gone from here
	// (after the two Configure calls' own notices).
	mmtest.Eventually(t, 30*time.Second, func() error {
		if n := len(changed); n < 3 {
			return fmt.Errorf("OnConfigChanged called %d times, want 3", n)
		}
		return nil
	})
}
