package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// TestFollowRereadsAllAfterOverflow: an external reads again the configs
// whose files changed, and every config when the kernel's queue of
// events overflowed (events were lost). Its watcher's errors were never
// read: after an overflow the watcher waited for ever to report it, and
// the external followed no config change again.
func TestFollowRereadsAllAfterOverflow(t *testing.T) {
	dir := t.TempDir()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e := &externalRole{d: d, task: "Ext"}
	e.keeper.kick = make(chan struct{}, 1)
	all := make(chan struct{}, 10)
	some := make(chan []string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.followWith(ctx, w,
			func() error { all <- struct{}{}; return nil },
			func(names []string) error { some <- names; return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })

	if err := os.WriteFile(filepath.Join(dir, "A.conf"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case names := <-some:
		if !slices.Equal(names, []string{"A"}) {
			t.Fatalf("read again %v, want [A]", names)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("A.conf written: not read again within 20 s")
	}
	select {
	case w.Errors <- fsnotify.ErrEventOverflow:
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher's overflow error was not taken within 20 s")
	}
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatal("after an overflow: the configs were not all read again within 20 s")
	}
}

// TestFollowWithoutWatcherPolls: an external that could not get an
// inotify instance (Linux allows 128 per user by default, and a state
// directory on a file system without inotify has none) looks at the
// config files instead, and reads again the configs that are new or
// changed since it read them all, and only those.
func TestFollowWithoutWatcherPolls(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name+".conf")); err != nil {
			t.Fatal(err)
		}
	}
	write("A", "{}\n")
	write("B", "{}\n")
	d := &Daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e := &externalRole{d: d, task: "Ext", pollDir: dir}
	e.keeper.kick = make(chan struct{}, 1)
	var err error
	if e.polled, err = stampConfigs(dir); err != nil {
		t.Fatal(err)
	}
	some := make(chan []string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.followWith(ctx, nil,
			func() error { t.Error("every config read again, want only the changed ones"); return nil },
			func(names []string) error { some <- slices.Sorted(slices.Values(names)); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })

	// The same bytes, written by a rename: a new file all the same.
	write("A", "{}\n")
	write("C", `{"x":1}`+"\n")
	if err := os.WriteFile(filepath.Join(dir, "Ext.status"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	for !slices.Equal(got, []string{"A", "C"}) {
		select {
		case names := <-some:
			got = slices.Compact(slices.Sorted(slices.Values(append(got, names...))))
		case <-time.After(20 * time.Second):
			t.Fatalf("configs read again: %v, want [A C] within 20 s", got)
		}
	}
}
