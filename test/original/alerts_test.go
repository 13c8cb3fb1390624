package original

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The monitoring scenarios route the alert channel to a queue, as the
// original did with `-o alert:test_alert_queue`, and read the alert
// records from it (docs/out-of-band.md: the alert is the record's
// details).
const alertQ = "test_alert_queue"

// alertOpt is the daemon option the monitoring scenarios start with.
var alertOpt = []string{"-o", "alert:" + alertQ}

// fastMonitor is the MultiModule task's config that shortens the
// monitor's clocks (docs/monitoring.md, "The MultiModule task's config"),
// so levels change within seconds instead of the minutes of the default
// windows, with the given threshold overrides. External starts are not
// alerted unless thresholds says otherwise: with windows this short one
// start is a rate of 0.5/s, above the default failsafe level.
func fastMonitor(thresholds map[string]any) map[string]any {
	th := map[string]any{"local.admin.start.external": map[string]any{"levels": []any{}}}
	for k, v := range thresholds {
		th[k] = v
	}
	return map[string]any{
		"intervals":  map[string]any{"sample": 0.25, "evaluate": 0.25},
		"windows":    map[string]any{"one_minute": 2, "five_minutes": 4},
		"thresholds": th,
	}
}

// levels builds a threshold entry: levels(can_failsafe, "failsafe", 0.3,
// "severe", 0.2, ...).
func levels(canFailsafe bool, nameThreshold ...any) map[string]any {
	var ls []any
	for i := 0; i+1 < len(nameThreshold); i += 2 {
		ls = append(ls, map[string]any{"name": nameThreshold[i], "threshold": nameThreshold[i+1]})
	}
	return map[string]any{"levels": ls, "can_failsafe": canFailsafe}
}

// alerts reads the alert records of one scenario and remembers every level
// seen per task and metric (the original's $got_levels).
type alerts struct {
	w    *world
	seen map[string]map[string]int // task:metric → level → count
	log  []string
}

func (w *world) alerts() *alerts { return &alerts{w: w, seen: map[string]map[string]int{}} }

// next reads one alert record, waiting up to timeout; ok is false when
// none came.
func (a *alerts) next(timeout time.Duration) (details map[string]any, ok bool) {
	a.w.t.Helper()
	rec, ok := a.w.recv(alertQ, timeout)
	if !ok {
		return nil, false
	}
	d, _ := rec["details"].(map[string]any)
	if d == nil {
		return map[string]any{}, true
	}
	key := fmt.Sprint(d["task_name"], ":", d["bucket_metric"])
	if a.seen[key] == nil {
		a.seen[key] = map[string]int{}
	}
	a.seen[key][fmt.Sprint(d["level"])]++
	a.log = append(a.log, fmt.Sprint(d["summary"], " (", d["level"], ")"))
	return d, true
}

// got reports whether level was seen for task and metric.
func (a *alerts) got(task, metric, level string) bool {
	return a.seen[task+":"+metric][level] > 0
}

// waitFor reads alerts until one for task and metric has one of the
// levels, and returns it; it fails the test after wait.
func (a *alerts) waitFor(task, metric string, lvls ...string) map[string]any {
	a.w.t.Helper()
	d, ok := a.tryWaitFor(wait, task, metric, lvls...)
	if !ok {
		a.w.t.Fatalf("no %v alert for %s:%s within %v; alerts seen: %v", lvls, task, metric, wait, a.log)
	}
	return d
}

// tryWaitFor is waitFor within timeout, without failing.
func (a *alerts) tryWaitFor(timeout time.Duration, task, metric string, lvls ...string) (map[string]any, bool) {
	a.w.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, l := range lvls {
		if a.got(task, metric, l) {
			return nil, true
		}
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, false
		}
		d, ok := a.next(left)
		if !ok {
			return nil, false
		}
		if d["task_name"] != task || d["bucket_metric"] != metric {
			continue
		}
		for _, l := range lvls {
			if d["level"] == l {
				return d, true
			}
		}
	}
}

// memTotal is the box's physical memory in bytes (/proc/meminfo).
func memTotal(t *testing.T) float64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// rss is the resident memory of pid in bytes (/proc/<pid>/status VmRSS).
func rss(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// externalPID waits until status shows task running as its own process
// (other than not) and returns its pid.
func (w *world) externalPID(task string, not int) int {
	w.t.Helper()
	var pid int
	w.eventually(task+" running external", func() error {
		s := w.status(task)
		if s == nil {
			return fmt.Errorf("no status line")
		}
		pid = int(num(s["pid"]))
		if s["where"] != "external" || s["running"] != true || pid == not || !alive(pid) {
			return fmt.Errorf("status %v", s)
		}
		return nil
	})
	return pid
}
