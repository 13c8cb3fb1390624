// Package observe serves a running daemon's state over HTTP: Prometheus
// metrics at /metrics, a JSON API under /api/v1/, Server-Sent Events of
// alerts and level changes, and an embedded web dashboard at /.
//
// It reads nothing itself: a Source (the daemon) gives a Snapshot of its
// tasks, queues and bus when one is asked for (a scrape, an API call, a
// tick of an event stream), so the listener costs nothing per message.
// The daemon reports what its monitor raises with Server.Alert.
//
//  1. The daemon implements Source and calls New.
//  2. It serves Server.Handler on its listener (off by default).
//  3. Every alert record it raises goes to Server.Alert; every
//     unfailsafe to Server.Unfailsafed.
//
// docs/monitoring.md documents the endpoints and every metric.
package observe

import (
	"context"
	"time"
)

// Place values: where a task runs.
const (
	PlaceInternal = "internal" // a goroutine of the daemon
	PlaceExternal = "external" // its own process, started by the daemon
	PlaceExec     = "exec"     // inside the daemon, with a co-process (an exec task)
)

// Task is one task as the daemon sees it: the data `multimodule status`
// prints, and the counters and process usage the metrics carry.
type Task struct {
	Task      string `json:"task"`
	Where     string `json:"where"` // internal, external, placed (a placed task on the box running it), or "-" (no process yet)
	Place     string `json:"place"` // internal, external or exec (the metrics' place label)
	PID       int    `json:"pid,omitempty"`
	Running   bool   `json:"running"`
	Failsafed bool   `json:"failsafed"`
	Why       string `json:"failsafe_reason,omitempty"`
	// StateAge is how old the task's saved state is, in seconds.
	StateAge *float64 `json:"state_age_seconds,omitempty"`
	Queue    int64    `json:"queue_depth"`
	// Alerts are the current levels other than ok, "<metric>/<window>" →
	// level (as `status` prints them).
	Alerts map[string]string `json:"alerts,omitempty"`
	// Levels are every level the monitor holds for the task, ok
	// included: "<metric>/<window>" → level, for the metrics with
	// thresholds that have samples in the monitor's cutoff age. Only the
	// daemon's HTTP API fills it.
	Levels map[string]string `json:"levels,omitempty"`
	// Why the task does not run, when the daemon knows: "failsafe",
	// "unknown task", "load error" or "back-off"; the detail, and when it
	// is tried again (unix seconds).
	Reason       string   `json:"reason,omitempty"`
	ReasonDetail string   `json:"reason_detail,omitempty"`
	RetryAt      *float64 `json:"retry_at,omitempty"`

	Counters Counters `json:"counters"`
	// Process is the usage of the task's own process (an external task,
	// or an exec task's co-process); nil for a task running in the
	// daemon's process, whose usage is the daemon's.
	Process *Process `json:"process,omitempty"`
	// RateHistory is the task's handled-message rate over the last
	// minutes, sampled by the HTTP listener; only its API fills it.
	RateHistory *RateHistory `json:"rate_history,omitempty"`
}

// Counters are a task's running totals since its process (or, for an
// internal task, its last failsafe) started counting.
type Counters struct {
	Handled        uint64  `json:"handled"`         // messages delivered to its handler
	Emitted        uint64  `json:"emitted"`         // messages it emitted
	Failed         uint64  `json:"failed"`          // handler failures
	HandlerSeconds float64 `json:"handler_seconds"` // time spent in its handler
	Restarts       uint64  `json:"restarts"`        // starts of its external process and co-process
	LoadFailures   uint64  `json:"load_failures"`   // failed loads, inside the daemon or as an external
	// HandlerBuckets are the handler latency histogram: cumulative counts
	// of handled messages by upper bound, ascending; the messages slower
	// than the last bound are HandlerCount minus its count. Empty when the
	// task has no histogram (it never ran here).
	HandlerBuckets []Bucket `json:"handler_buckets,omitempty"`
	// HandlerCount is every message the handler-time figures cover
	// (messages handled, and state transforms), the histogram's count.
	HandlerCount uint64 `json:"handler_count,omitempty"`
}

// Bucket is one cumulative histogram bucket: Count observations took at
// most LE seconds.
type Bucket struct {
	LE    float64 `json:"le"`
	Count uint64  `json:"count"`
}

// Process is the usage of one process (or a process and its co-process).
type Process struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   uint64  `json:"rss_bytes"`
	FDs        int     `json:"fds"`
	Threads    int     `json:"threads"`
	ReadBytes  uint64  `json:"read_bytes"`
	WriteBytes uint64  `json:"write_bytes"`
}

// Queue is one queue, as `multimodule queues -a --json` prints it.
type Queue struct {
	Name          string  `json:"name"`
	Waiting       int64   `json:"waiting"`
	Bytes         int64   `json:"bytes"`
	CapacityMsgs  int64   `json:"capacity_msgs"`
	CapacityBytes int64   `json:"capacity_bytes"`
	PercentFull   float64 `json:"percent_full"`
	Local         bool    `json:"local,omitempty"`
}

// Bus is the health of the daemon's connection to the bus.
type Bus struct {
	Connected   bool   `json:"connected"`
	Reconnects  uint64 `json:"reconnects"`
	DeadLetters int64  `json:"dead_letters"` // messages in the dead-letter queue
	// Error is why the queues could not be listed, when they could not.
	Error string `json:"error,omitempty"`
}

// Snapshot is the daemon's state at one moment.
type Snapshot struct {
	Time   time.Time `json:"time"`
	Tasks  []Task    `json:"tasks"`
	Queues []Queue   `json:"queues"`
	Bus    Bus       `json:"bus"`
}

// Source is what the server reads and acts on: the daemon.
type Source interface {
	// Snapshot describes every task, queue and the bus now.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Failsafe and Unfailsafe act as the control queue's failsafe and
	// unfailsafe do; an error says why the daemon refused.
	Failsafe(ctx context.Context, task, reason string) error
	Unfailsafe(ctx context.Context, task string) error
}

// Alert is one record of the alert channel (a monitor level change, or a
// failsafe), or an unfailsafe.
type Alert struct {
	Time      float64 `json:"time"` // unix seconds
	Task      string  `json:"task"`
	Text      string  `json:"text"`
	Level     string  `json:"level,omitempty"`
	Previous  string  `json:"previous_level,omitempty"`
	Metric    string  `json:"metric,omitempty"`
	Window    string  `json:"window,omitempty"`
	Value     float64 `json:"value,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	// Failsafe is set when the task was failsafed; By says by whom
	// ("monitor" or "operator").
	Failsafe bool   `json:"failsafe,omitempty"`
	By       string `json:"by,omitempty"`
	// Unfailsafe is set on the record of an unfailsafe.
	Unfailsafe bool `json:"unfailsafe,omitempty"`
}

// AlertFromRecord builds an Alert from an alert-channel record: the
// task, its one-line text, and its details (monitor.Alert.Message, or a
// failsafe file's content).
func AlertFromRecord(at time.Time, task, text string, details map[string]any) Alert {
	a := Alert{Time: float64(at.UnixNano()) / 1e9, Task: task, Text: text}
	str := func(k string) string { s, _ := details[k].(string); return s }
	num := func(k string) float64 { f, _ := details[k].(float64); return f }
	a.Level, a.Previous = str("level"), str("previous_level")
	a.Metric, a.Window = str("bucket_metric"), str("window")
	a.Value, a.Threshold = num("value"), num("threshold")
	if by := str("failsafed_by"); by != "" {
		a.Failsafe, a.By, a.Level = true, by, "failsafe"
	}
	return a
}

// LevelValue is a level's number in the metrics: 0 ok, 1 warn, 2 severe,
// 3 failsafe; another configured level name counts as 1.
func LevelValue(level string) float64 {
	switch level {
	case "", "ok":
		return 0
	case "severe":
		return 2
	case "failsafe":
		return 3
	}
	return 1
}
