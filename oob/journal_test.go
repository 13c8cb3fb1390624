package oob_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/oob"
)

// journalStream returns the JOURNAL_STREAM value naming f.
func journalStream(t *testing.T, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func tempFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestIsJournal: only the file JOURNAL_STREAM names is the journal.
func TestIsJournal(t *testing.T) {
	journal, other := tempFile(t, "journal"), tempFile(t, "other")
	t.Setenv("JOURNAL_STREAM", journalStream(t, journal))
	if !oob.IsJournal(journal) {
		t.Error("the file JOURNAL_STREAM names is not taken for the journal")
	}
	if oob.IsJournal(other) {
		t.Error("another file is taken for the journal")
	}
	if oob.IsJournal(&bytes.Buffer{}) {
		t.Error("a buffer is taken for the journal")
	}
	for _, v := range []string{"", "12", "x:y", "1:2:3"} {
		t.Setenv("JOURNAL_STREAM", v)
		if oob.IsJournal(journal) {
			t.Errorf("JOURNAL_STREAM=%q: taken for the journal", v)
		}
	}
}

var timestampRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d`)

// TestJournalOutput: a dispatcher whose stdout and stderr are the journal
// stream (found through JOURNAL_STREAM, as under systemd) writes lines
// with the channel's syslog priority and without a time (the journal
// stamps them), continuation lines prefixed too.
func TestJournalOutput(t *testing.T) {
	f := tempFile(t, "journal")
	t.Setenv("JOURNAL_STREAM", journalStream(t, f))
	d := oob.New(oob.Options{Handling: oob.Handling{"log": "1", "error": "2", "alert": "2", "debug": "1", "audit": "1"},
		Stdout: f, Stderr: f, DebugLevel: 1})
	when := time.Date(2026, 11, 26, 20, 27, 36, 0, time.UTC)
	for _, r := range []oob.Record{
		{Channel: "log", Task: "Example1", Text: "hello", PID: 42, Time: when, Details: map[string]any{"n": 1}},
		{Channel: "error", Task: "main", Text: "broke\nsecond line", PID: 42, Time: when},
		{Channel: "alert", Text: "cpu high", PID: 7, Time: when},
		{Channel: "debug", Text: "details", PID: 42, Time: when},
		{Channel: "audit", Text: "who", PID: 42, Time: when},
	} {
		d.Handle(context.Background(), r)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := "<6>42 LOG Example1: hello n=1\n" +
		"<3>42 ERROR main: broke\n<3>\tsecond line\n" +
		"<1>7 ALERT cpu high\n" +
		"<7>42 DEBUG details\n" +
		"<5>42 AUDIT who\n"
	if string(got) != want {
		t.Fatalf("journal output:\n%s\nwant:\n%s", got, want)
	}
	if timestampRE.Match(got) {
		t.Fatalf("journal output has timestamps:\n%s", got)
	}
}

// TestJournalOption: Options.Journal decides, and a writer that is not
// the journal keeps its format (JSON lines here).
func TestJournalOption(t *testing.T) {
	var journal, plain bytes.Buffer
	d := oob.New(oob.Options{Handling: oob.Handling{"log": "1", "error": "2"}, Stdout: &journal, Stderr: &plain,
		Journal: func(w io.Writer) bool { return w == &journal }, Terminal: notTerminal})
	d.Handle(context.Background(), oob.Record{Channel: "log", Text: "to journal", PID: 1})
	d.Handle(context.Background(), oob.Record{Channel: "error", Text: "to file", PID: 1})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if journal.String() != "<6>1 LOG to journal\n" {
		t.Errorf("journal writer got %q", journal.String())
	}
	if !bytes.HasPrefix(plain.Bytes(), []byte(`{"oob_channel":"error"`)) {
		t.Errorf("other writer got %q, want a JSON line", plain.String())
	}
}
