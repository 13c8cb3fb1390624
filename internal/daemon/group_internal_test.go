package daemon

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestGroupStopsAllWhenOneReturns: when one actor returns, every other is
// interrupted (with that actor's error), one after the other in the
// order they were added, and run returns once all have returned, with the
// first error.
func TestGroupStopsAllWhenOneReturns(t *testing.T) {
	errFirst := errors.New("first")
	var (
		g       group
		mu      sync.Mutex
		stopped []string // in the order the actors returned
		got     []error  // what each interrupt was given
	)
	note := func(name string) {
		mu.Lock()
		stopped = append(stopped, name)
		mu.Unlock()
	}
	for _, name := range []string{"a", "b", "c"} {
		stop := make(chan struct{})
		g.add(func() error {
			<-stop
			note(name)
			return errors.New(name + " stopped")
		}, func(err error) {
			mu.Lock()
			got = append(got, err)
			mu.Unlock()
			close(stop)
		})
	}
	quit := make(chan struct{})
	g.add(func() error { <-quit; note("ends"); return errFirst }, func(error) {})
	g.addUntilStopped(func(ctx context.Context) {}) // returns at once: waits for its interrupt

	res := make(chan error, 1)
	go func() { res <- g.run() }()
	select {
	case err := <-res:
		t.Fatalf("run returned %v before any actor did", err)
	default:
	}
	close(quit)
	select {
	case err := <-res:
		if !errors.Is(err, errFirst) {
			t.Errorf("run returned %v, want the first error %v", err, errFirst)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return once an actor had")
	}
	if want := []string{"ends", "a", "b", "c"}; !slices.Equal(stopped, want) {
		t.Errorf("actors returned in the order %q, want %q", stopped, want)
	}
	for i, err := range got {
		if err != errFirst {
			t.Errorf("interrupt %d got %v, want %v", i, err, errFirst)
		}
	}
}

// TestGroupFirstErrorNotNil: an actor that ends without an error (the
// daemon's exit) stops the group, and an error returned while the others
// stop (the host's orderly exit failing) is what run returns.
func TestGroupFirstErrorNotNil(t *testing.T) {
	errLater := errors.New("later")
	var g group
	g.add(func() error { return nil }, func(error) {})
	stop := make(chan struct{})
	g.add(func() error { <-stop; return errLater }, func(error) { close(stop) })
	if err := g.run(); !errors.Is(err, errLater) {
		t.Fatalf("run returned %v, want %v", err, errLater)
	}
	var empty group
	if err := empty.run(); err != nil {
		t.Fatalf("an empty group's run returned %v, want nil", err)
	}
}
