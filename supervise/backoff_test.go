package supervise

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

func TestBackoffNext(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name   string
		b      Backoff
		ranFor []time.Duration // one per crash
		want   []time.Duration
	}{
		{
			name:   "doubles up to Max",
			b:      Backoff{Min: 50 * ms, Max: 400 * ms, ResetAfter: time.Second},
			ranFor: []time.Duration{0, 0, 0, 0, 0, 0, 0},
			want:   []time.Duration{0, 50 * ms, 100 * ms, 200 * ms, 400 * ms, 400 * ms, 400 * ms},
		},
		{
			name:   "Max not a power-of-two multiple of Min",
			b:      Backoff{Min: 50 * ms, Max: 300 * ms, ResetAfter: time.Second},
			ranFor: []time.Duration{0, 0, 0, 0, 0, 0},
			want:   []time.Duration{0, 50 * ms, 100 * ms, 200 * ms, 300 * ms, 300 * ms},
		},
		{
			name:   "a healthy run (ResetAfter) restarts at once",
			b:      Backoff{Min: 50 * ms, Max: 10 * time.Second, ResetAfter: time.Second},
			ranFor: []time.Duration{0, 10 * ms, 999 * ms, time.Second, 0, 0, 5 * time.Second, 0},
			want:   []time.Duration{0, 50 * ms, 100 * ms, 0, 50 * ms, 100 * ms, 0, 50 * ms},
		},
		{
			name:   "zero Backoff never waits",
			b:      Backoff{},
			ranFor: []time.Duration{0, 0, 0},
			want:   []time.Duration{0, 0, 0},
		},
		{
			name:   "the external task policy",
			b:      ExternalRestart,
			ranFor: []time.Duration{0, 0, 0, 0, 0, 0, 10 * time.Second},
			want:   []time.Duration{0, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 0},
		},
		{
			name:   "Max below Min counts as Min",
			b:      Backoff{Min: time.Second, Max: 100 * ms, ResetAfter: time.Minute},
			ranFor: []time.Duration{0, 0, 0},
			want:   []time.Duration{0, time.Second, time.Second},
		},
		{
			name:   "no overflow near the largest duration",
			b:      Backoff{Min: time.Duration(math.MaxInt64 / 3), Max: time.Duration(math.MaxInt64), ResetAfter: time.Duration(math.MaxInt64)},
			ranFor: []time.Duration{0, 0, 0, 0, 0},
			want: []time.Duration{
				0, time.Duration(math.MaxInt64 / 3), 2 * time.Duration(math.MaxInt64/3),
				time.Duration(math.MaxInt64), time.Duration(math.MaxInt64),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			var got []time.Duration
			for _, r := range tt.ranFor {
				got = append(got, b.Next(r))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Next over runs %v: got %v, want %v", tt.ranFor, got, tt.want)
			}
		})
	}
}

func TestBackoffReset(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: time.Second, ResetAfter: time.Minute}
	b.Next(0)
	b.Next(0)
	b.Reset()
	if got := b.Next(0); got != 0 {
		t.Errorf("Next after Reset: got %v, want 0 (at once)", got)
	}
	if got, want := b.Next(0), 10*time.Millisecond; got != want {
		t.Errorf("Next after Reset, second crash in a row: got %v, want %v", got, want)
	}
}

func ExampleBackoff() {
	// A task that crashes at once, again and again, and then runs for a
	// minute before crashing once more.
	b := Backoff{Min: 50 * time.Millisecond, Max: time.Second, ResetAfter: 30 * time.Second}
	for _, ranFor := range []time.Duration{0, 0, 0, 0, 0, 0, 0, time.Minute} {
		fmt.Println(b.Next(ranFor))
	}
	// Output:
	// 0s
	// 50ms
	// 100ms
	// 200ms
	// 400ms
	// 800ms
	// 1s
	// 0s
}

func TestRetryAfter(t *testing.T) {
	r := Retry{First: time.Second, Max: 30 * time.Second}
	for failures, want := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		5: 16 * time.Second, 6: 30 * time.Second, 7: 30 * time.Second, math.MaxInt: 30 * time.Second,
	} {
		if got := r.After(failures); got != want {
			t.Errorf("After(%d): got %v, want %v", failures, got, want)
		}
	}
	if got := (Retry{First: time.Second, Max: time.Millisecond}).After(3); got != time.Second {
		t.Errorf("Max below First: got %v, want First", got)
	}
	// The figures docs/operations.md gives for a task that failed to load.
	if TaskLoadRetry.After(1) != time.Second || TaskLoadRetry.After(2) != 2*time.Second || TaskLoadRetry.After(100) != 30*time.Second {
		t.Errorf("TaskLoadRetry: got %v, %v, %v; want 1s, 2s, 30s", TaskLoadRetry.After(1), TaskLoadRetry.After(2), TaskLoadRetry.After(100))
	}
}
