package observe

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector that asks its Source for a
// Snapshot at every scrape: nothing is counted per message, and the
// series are exactly the tasks and queues that exist at the scrape.
type Collector struct {
	src     Source
	timeout time.Duration
	log     *slog.Logger

	handled, emitted, failed, handlerSeconds, restarts, loadFailures *prometheus.Desc
	up, failsafed, level, worstLevel                                 *prometheus.Desc
	cpu, rss, fds, threads, readBytes, writeBytes                    *prometheus.Desc
	qMsgs, qBytes, qCapMsgs, qCapBytes, qFull                        *prometheus.Desc
	busConnected, busReconnects, deadLetters, snapshotOK             *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of src's metrics. timeout bounds
// one snapshot (0: 10 s).
func NewCollector(src Source, timeout time.Duration, log *slog.Logger) *Collector {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	task := []string{"task", "place"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("multimodule_"+name, help, labels, nil)
	}
	return &Collector{
		src: src, timeout: timeout, log: log,
		handled:        d("task_messages_handled_total", "Messages delivered to the task's handler.", task...),
		emitted:        d("task_messages_emitted_total", "Messages the task emitted.", task...),
		failed:         d("task_messages_failed_total", "Messages whose handler failed.", task...),
		handlerSeconds: d("task_handler_seconds", "Time the task's handler took per message (a batch's messages each count at the batch's mean).", task...),
		restarts:       d("task_restarts_total", "Starts of the task's external process and restarts of its co-process.", task...),
		loadFailures:   d("task_load_failures_total", "Failed loads of the task, inside the daemon or as an external process.", task...),
		up:             d("task_up", "1 when the task runs (hosted by the daemon, or its external process runs), else 0.", task...),
		failsafed:      d("task_failsafed", "1 when the task is failsafed (stopped until unfailsafed), else 0.", task...),
		level:          d("task_alert_level", "The task's alert level of one monitor metric, the worst of its windows: 0 ok, 1 warn, 2 severe, 3 failsafe; present while the monitor holds samples of that metric.", "task", "place", "metric"),
		worstLevel:     d("task_alert_level_max", "The task's worst alert level over every metric and window: 0 ok, 1 warn, 2 severe, 3 failsafe.", task...),
		cpu:            d("task_cpu_seconds_total", "CPU time of the task's own process (and co-process); absent for tasks in the daemon's process.", task...),
		rss:            d("task_resident_memory_bytes", "Resident memory of the task's own process (and co-process).", task...),
		fds:            d("task_open_fds", "Open file descriptors of the task's own process (and co-process).", task...),
		threads:        d("task_threads", "Threads of the task's own process (and co-process).", task...),
		readBytes:      d("task_disk_read_bytes_total", "Bytes the task's own process (and co-process) caused to be read from storage.", task...),
		writeBytes:     d("task_disk_write_bytes_total", "Bytes the task's own process (and co-process) caused to be written to storage.", task...),
		qMsgs:          d("queue_messages", "Messages waiting in the queue.", "queue"),
		qBytes:         d("queue_bytes", "Bytes waiting in the queue (on the bus: an estimate from the stream's mean message size).", "queue"),
		qCapMsgs:       d("queue_capacity_messages", "The queue's capacity in messages.", "queue"),
		qCapBytes:      d("queue_capacity_bytes", "The queue's capacity in bytes (on the bus: the host scope's stream).", "queue"),
		qFull:          d("queue_fullness_ratio", "How full the queue is, 0 to 1: the larger of messages and bytes against their capacities.", "queue"),
		busConnected:   d("bus_connected", "1 when the daemon is connected to the bus, else 0."),
		busReconnects:  d("bus_reconnects_total", "Times the daemon's bus connection was restored."),
		deadLetters:    d("bus_dead_letters", "Messages waiting in the dead-letter queue."),
		snapshotOK:     d("scrape_snapshot_ok", "1 when this scrape read the daemon's state in full (tasks, queues and bus), else 0 (see the daemon's log)."),
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.handled, c.emitted, c.failed, c.handlerSeconds, c.restarts, c.loadFailures,
		c.up, c.failsafed, c.level, c.worstLevel, c.cpu, c.rss, c.fds, c.threads, c.readBytes, c.writeBytes,
		c.qMsgs, c.qBytes, c.qCapMsgs, c.qCapBytes, c.qFull, c.busConnected, c.busReconnects, c.deadLetters, c.snapshotOK} {
		ch <- d
	}
}

// Collect takes one snapshot and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, err := c.src.Snapshot(ctx)
	ok := 1.0
	if err != nil || s.Bus.Error != "" {
		ok = 0
		if err != nil {
			c.log.Warn("metrics: snapshot", "error", err)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.snapshotOK, prometheus.GaugeValue, ok)
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for _, t := range s.Tasks {
		l := []string{t.Task, t.Place}
		counter(c.handled, float64(t.Counters.Handled), l...)
		counter(c.emitted, float64(t.Counters.Emitted), l...)
		counter(c.failed, float64(t.Counters.Failed), l...)
		if bs := t.Counters.HandlerBuckets; len(bs) > 0 {
			buckets := make(map[float64]uint64, len(bs))
			for _, b := range bs {
				buckets[b.LE] = b.Count
			}
			ch <- prometheus.MustNewConstHistogram(c.handlerSeconds, t.Counters.HandlerCount, t.Counters.HandlerSeconds, buckets, l...)
		}
		counter(c.restarts, float64(t.Counters.Restarts), l...)
		counter(c.loadFailures, float64(t.Counters.LoadFailures), l...)
		gauge(c.up, b2f(t.Running), l...)
		gauge(c.failsafed, b2f(t.Failsafed), l...)
		worst := 0.0
		perMetric := map[string]float64{}
		for _, levels := range []map[string]string{t.Levels, t.Alerts} {
			for key, lv := range levels {
				metric, _, _ := strings.Cut(key, "/")
				v := LevelValue(lv)
				perMetric[metric] = max(perMetric[metric], v)
				worst = max(worst, v)
			}
		}
		for metric, v := range perMetric {
			gauge(c.level, v, t.Task, t.Place, metric)
		}
		if t.Failsafed {
			worst = 3
		}
		gauge(c.worstLevel, worst, l...)
		if p := t.Process; p != nil {
			counter(c.cpu, p.CPUSeconds, l...)
			gauge(c.rss, float64(p.RSSBytes), l...)
			gauge(c.fds, float64(p.FDs), l...)
			gauge(c.threads, float64(p.Threads), l...)
			counter(c.readBytes, float64(p.ReadBytes), l...)
			counter(c.writeBytes, float64(p.WriteBytes), l...)
		}
	}
	for _, q := range s.Queues {
		gauge(c.qMsgs, float64(q.Waiting), q.Name)
		gauge(c.qBytes, float64(q.Bytes), q.Name)
		gauge(c.qCapMsgs, float64(q.CapacityMsgs), q.Name)
		gauge(c.qCapBytes, float64(q.CapacityBytes), q.Name)
		gauge(c.qFull, q.PercentFull/100, q.Name)
	}
	if err == nil {
		gauge(c.busConnected, b2f(s.Bus.Connected))
		counter(c.busReconnects, float64(s.Bus.Reconnects))
		if s.Bus.Error == "" {
			gauge(c.deadLetters, float64(s.Bus.DeadLetters))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
