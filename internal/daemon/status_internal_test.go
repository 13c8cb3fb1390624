package daemon

import (
	"testing"

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
