package monitor

import "strings"

// Metric names. They are user-visible: thresholds are keyed by
// them and alerts carry them, so they keep the original's spelling.
const (
	// Per process (the daemon as task "main", and every external task).
	MetricFDs           = "local.handles.fh.count"           // open file handles (gauge)
	MetricThreads       = "local.handles.tasks.count"        // threads (gauge)
	MetricMemory        = "local.memory.vss_of_box_physical" // resident memory ÷ the box's physical memory (gauge)
	MetricDiskRead      = "local.io.disk.read_bytes"         // bytes read per second (gauge of rates)
	MetricDiskWrite     = "local.io.disk.write_bytes"        // bytes written per second (gauge of rates)
	MetricCPU           = "local.cpu.one_core"               // CPU in cores (gauge of rates)
	MetricQueueFullness = "local.queue.bytes_of_max"         // per queue: fullness 0..1 (gauge)

	// Per task: cumulative totals of messages (counter; evaluated per minute).
	MetricPassedMessages = "local.admin.passed_messages" // messages delivered to the task
	MetricEmitMessages   = "local.admin.emit_messages"   // messages the task emitted

	// Per task: admin events, each recorded as the value 1 (sum; a rate per second).
	MetricMessageFailure         = "local.admin.task_message_failure"
	MetricCompileFailureInternal = "local.admin.task_compile_failure.internal"
	MetricCompileFailureExternal = "local.admin.task_compile_failure.external"
	MetricStartExternal          = "local.admin.start.external"
	MetricStartCoprocess         = "local.admin.start.coprocess" // a task's co-process restarted (exec tasks)
	MetricStopInternal           = "local.admin.stop.internal"
	MetricStopRequestExternal    = "local.admin.stop_request.external"
	MetricStartRequestInternal   = "local.admin.start_request.internal"
	MetricStartRequestExternal   = "local.admin.start_request.external"
)

// Check types, the alert's check_type: what kind of thing was measured.
const (
	CheckProcess = "process" // per-process usage
	CheckQueue   = "queue"   // queue fullness
	CheckTasks   = "tasks"   // per-task message counts
	CheckAdmin   = "admin"   // framework events (loads, failures, starts, stops)
	CheckCustom  = "custom"  // any other metric
)

// MetricInfo says how samples of one metric are kept and reported.
type MetricInfo struct {
	Kind  Kind    // the bucket kind
	Check string  // the alert's check type
	Scale float64 // the evaluated value is multiplied by this before thresholds apply; 0 means 1
}

// DefaultMetrics returns how every metric is kept. The message
// counts are counters of cumulative totals with Scale 60, so their value
// is messages per minute — the unit the default thresholds (10000 and
// 20000) are in.
func DefaultMetrics() map[string]MetricInfo {
	proc := MetricInfo{Kind: Gauge, Check: CheckProcess}
	admin := MetricInfo{Kind: Sum, Check: CheckAdmin}
	perMinute := MetricInfo{Kind: Counter, Check: CheckTasks, Scale: 60}
	return map[string]MetricInfo{
		MetricFDs:                    proc,
		MetricThreads:                proc,
		MetricMemory:                 proc,
		MetricDiskRead:               proc,
		MetricDiskWrite:              proc,
		MetricCPU:                    proc,
		MetricQueueFullness:          {Kind: Gauge, Check: CheckQueue},
		MetricPassedMessages:         perMinute,
		MetricEmitMessages:           perMinute,
		MetricMessageFailure:         admin,
		MetricCompileFailureInternal: admin,
		MetricCompileFailureExternal: admin,
		MetricStartExternal:          admin,
		MetricStartCoprocess:         admin,
		MetricStopInternal:           admin,
		MetricStopRequestExternal:    admin,
		MetricStartRequestInternal:   admin,
		MetricStartRequestExternal:   admin,
	}
}

// infoFor returns how metric is kept: from known, else by its name — any
// other "local.admin." metric is an admin event (sum), anything else a
// gauge.
func infoFor(known map[string]MetricInfo, metric string) MetricInfo {
	if mi, ok := known[metric]; ok {
		if mi.Scale == 0 {
			mi.Scale = 1
		}
		if mi.Check == "" {
			mi.Check = CheckCustom
		}
		return mi
	}
	if strings.HasPrefix(metric, "local.admin.") {
		return MetricInfo{Kind: Sum, Check: CheckAdmin, Scale: 1}
	}
	return MetricInfo{Kind: Gauge, Check: CheckCustom, Scale: 1}
}
