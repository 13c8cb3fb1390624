package oob_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/multimodule/multimodule/oob"
)

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkDebugDisabled is the cost of a debug log call at -d 0: it must
// return at Enabled, with no allocation.
func BenchmarkDebugDisabled(b *testing.B) {
	d := oob.New(oob.Options{Handling: oob.Handling{"debug": "/dev/null"}})
	defer d.Close()
	b.Run("slog.Debug", func(b *testing.B) {
		l := slog.New(oob.NewSlogHandler(d))
		b.ReportAllocs()
		for b.Loop() {
			l.Debug("tick", "task", "Foo", "n", 42)
		}
	})
	b.Run("slog.LogAttrs", func(b *testing.B) {
		l := slog.New(oob.NewSlogHandler(d))
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelDebug, "tick", slog.String("task", "Foo"), slog.Int("n", 42))
		}
	})
	b.Run("Handle", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			d.Handle(ctx, oob.Record{Channel: "debug", Text: "tick", Task: "Foo"})
		}
	})
	b.Run("DebugEnabled", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d.DebugEnabled(1) {
				b.Fatal("enabled at -d 0")
			}
		}
	})
}

// BenchmarkDebugEnabled is the same call at -d 1, written as a JSON line
// to /dev/null (a file sink that discards): the full cost of a debug
// record.
func BenchmarkDebugEnabled(b *testing.B) {
	d := oob.New(oob.Options{Handling: oob.Handling{"debug": "/dev/null"}, DebugLevel: 1})
	defer d.Close()
	l := slog.New(oob.NewSlogHandler(d))
	b.ReportAllocs()
	for b.Loop() {
		l.Debug("tick", "task", "Foo", "n", 42)
	}
	reportRate(b)
}

// BenchmarkFileAppend measures appending to a real file, checking the
// path for rotation before every write versus at most once a second.
func BenchmarkFileAppend(b *testing.B) {
	for _, bc := range []struct {
		name  string
		check time.Duration
	}{{"rotate-check=every-write", -1}, {"rotate-check=1s", time.Second}} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "log.out")
			d := oob.New(oob.Options{Handling: oob.Handling{"log": path}, RotateCheck: bc.check})
			defer d.Close()
			ctx := context.Background()
			r := oob.Record{Channel: "log", Text: "task loaded", Task: "Foo", Details: map[string]any{"n": int64(42)}}
			b.ReportAllocs()
			for b.Loop() {
				d.Handle(ctx, r)
			}
			reportRate(b)
		})
	}
}

// BenchmarkFileAppendParallel is many goroutines logging to one file.
func BenchmarkFileAppendParallel(b *testing.B) {
	path := filepath.Join(b.TempDir(), "log.out")
	d := oob.New(oob.Options{Handling: oob.Handling{"log": path}})
	defer d.Close()
	ctx := context.Background()
	r := oob.Record{Channel: "log", Text: "task loaded", Task: "Foo", Details: map[string]any{"n": int64(42)}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Handle(ctx, r)
		}
	})
	reportRate(b)
}

// BenchmarkFormat is the cost of the two line formats, written to
// io.Discard.
func BenchmarkFormat(b *testing.B) {
	for _, bc := range []struct {
		name string
		term bool
	}{{"human", true}, {"json", false}} {
		b.Run(bc.name, func(b *testing.B) {
			d := oob.New(oob.Options{Handling: oob.Handling{"log": "1"}, Stdout: io.Discard,
				Terminal: func(io.Writer) bool { return bc.term }})
			defer d.Close()
			ctx := context.Background()
			r := oob.Record{Channel: "log", Text: "task loaded", Task: "Foo", Details: map[string]any{"n": int64(42), "queue": "Foo"}}
			b.ReportAllocs()
			for b.Loop() {
				d.Handle(ctx, r)
			}
			reportRate(b)
		})
	}
}

// BenchmarkFiltered is a record checked against an include and an
// exclude pattern before a human line to io.Discard.
func BenchmarkFiltered(b *testing.B) {
	d := oob.New(oob.Options{Handling: oob.Handling{"log": "1"}, Stdout: io.Discard, Terminal: func(io.Writer) bool { return true }})
	defer d.Close()
	if err := d.SetFilters(map[string]any{"log": map[string]any{
		"include_matches": map[string]any{"foo": map[string]any{"task": "Foo"}},
		"exclude_matches": map[string]any{"ticks": map[string]any{"text": " special/tick/"}},
	}}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := oob.Record{Channel: "log", Text: "task loaded", Task: "Foo", Details: map[string]any{"n": int64(42)}}
	b.ReportAllocs()
	for b.Loop() {
		d.Handle(ctx, r)
	}
	reportRate(b)
}
