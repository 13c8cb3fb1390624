package monitor

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/multimodule/multimodule/message"
)

// Alert says that a bucket's level changed over one window. Monitor raises
// one per change (never a repeat of the same level), including one "ok"
// when a bucket recovers.
type Alert struct {
	Task        string        // the task (or, for queue fullness, the queue) the bucket belongs to
	Check       string        // check type: "process", "queue", "tasks", "admin" or "custom"
	Bucket      string        // bucket name, "<task>:<metric>"
	Metric      string        // metric name, e.g. "local.cpu.one_core"
	Window      string        // window name, e.g. "one_minute"
	WindowWidth time.Duration // the window's width
	Value       float64       // the bucket's value over the window
	Threshold   float64       // the threshold the value exceeded; 0 for "ok"
	Level       string        // the new level: a configured level name, or "ok"
	Previous    string        // the level before this change ("ok" at first)
	Summary     string        // one line, e.g. "one_minute: main:local.cpu.one_core: 1.95 (1.9) is failsafe"
	Time        time.Time     // when it was evaluated
	Failsafed   bool          // the task was failsafed because of this alert
}

// summary builds the one-line text, in the original's shape.
func (a Alert) summary() string {
	if a.Level == LevelOK {
		return fmt.Sprintf("%s: %s is ok", a.Window, a.Bucket)
	}
	return fmt.Sprintf("%s: %s: %s (%s) is %s", a.Window, a.Bucket, formatValue(a.Value), formatValue(a.Threshold), a.Level)
}

// formatValue prints v with four significant digits, or as a whole
// number when it is that large, so summaries stay short and readable.
func formatValue(v float64) string {
	if math.Abs(v) >= 1000 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// Message returns the alert as the record that goes on the `alert`
// channel (and into a <Task>.failsafe file). Keys:
//
//	task_name, check_type, bucket_name, bucket_metric, window,
//	window_width (seconds), value, return_value (= value, the original's
//	name), threshold (absent for "ok"), level, previous_level, summary,
//	time (unix seconds), failsafe (true only when the task was failsafed)
func (a Alert) Message() message.Message {
	m := message.Message{
		"task_name":      a.Task,
		"check_type":     a.Check,
		"bucket_name":    a.Bucket,
		"bucket_metric":  a.Metric,
		"window":         a.Window,
		"window_width":   a.WindowWidth.Seconds(),
		"value":          finite(a.Value),
		"return_value":   finite(a.Value),
		"level":          a.Level,
		"previous_level": a.Previous,
		"summary":        a.Summary,
		"time":           float64(a.Time.UnixNano()) / 1e9,
	}
	if a.Level != LevelOK {
		m["threshold"] = finite(a.Threshold)
	}
	if a.Failsafed {
		m["failsafe"] = true
	}
	return m
}

// finite keeps a Message JSON-compatible: values are finite by
// construction, but never let a NaN make an alert unsendable.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
