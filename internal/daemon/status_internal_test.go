package daemon

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/multimodule/multimodule/store"
)

// TestExternalStatusWrittenOnlyWhenDue: an external's status, asked for
// every 2 s, is written again only when what the monitor reads in it
// changed, or once it is statusRefresh old.
func TestExternalStatusWrittenOnlyWhenDue(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{opts: Options{Task: "Ext"}, store: st}
	d.role = &externalRole{d: d, task: "Ext"}
	saved := func() float64 {
		t.Helper()
		s, err := st.LoadStatus("Ext")
		if err != nil || s == nil {
			t.Fatalf("LoadStatus: %v, %v", s, err)
		}
		return s.SaveTS
	}
	if err := d.writeMainStatus(); err != nil {
		t.Fatal(err)
	}
	first := saved()
	if err := d.writeMainStatus(); err != nil {
		t.Fatal(err)
	}
	if again := saved(); again != first {
		t.Fatalf("status written again (save_ts %v, then %v) with nothing changed", first, again)
	}
	d.statusKey = "something else" // as if the counters had moved
	if err := d.writeMainStatus(); err != nil {
		t.Fatal(err)
	}
	second := saved()
	if second == first {
		t.Fatal("status not written again after a change")
	}
	d.statusSaved = d.statusSaved.Add(-statusRefresh) // as if statusRefresh had passed
	if err := d.writeMainStatus(); err != nil {
		t.Fatal(err)
	}
	if saved() == second {
		t.Fatal("status not written again once statusRefresh old")
	}
}

// TestIdleExternalDoesNotLookAtItsStatus: an external whose task is idle
// does not wake to look at its status (it looked every 2 s); told that
// its counters moved (a delivery handled, a config applied), it looks and
// writes within statusEvery, and pokes while a look is due cost nothing
// more.
func TestIdleExternalDoesNotLookAtItsStatus(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{opts: Options{Task: "Ext"}, store: st, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e := &externalRole{d: d, task: "Ext"}
	d.role = e
	e.keeper.kick = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.keepStatus(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The window in which nothing may happen (a measurement, not a wait
	// for an event).
	time.Sleep(2500 * time.Millisecond)
	if n := e.keeper.looks.Load(); n != 0 {
		t.Fatalf("the idle external looked at its status %d times in 2.5 s, want 0", n)
	}
	for range 1000 {
		e.keeper.poke()
	}
	for deadline := time.Now().Add(20 * time.Second); e.keeper.looks.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no look within 20 s of a poke")
		}
	}
	if s, err := st.LoadStatus("Ext"); err != nil || s == nil {
		t.Fatalf("status after the look: %v, %v; want it written", s, err)
	}
	if n := e.keeper.looks.Load(); n != 1 {
		t.Errorf("1000 pokes led to %d looks, want 1", n)
	}
}
