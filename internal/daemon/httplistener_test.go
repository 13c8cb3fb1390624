package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/store"
)

// startHTTPDaemon starts the tutorial with --http on a port the daemon
// picks and returns the daemon and its base URL (from <state>/http.json).
func startHTTPDaemon(t *testing.T, env *mmtest.Env, args ...string) (*mmtest.Proc, string) {
	t.Helper()
	args = append([]string{"-p", "MultiModuleTest", "-c", tutorialPath(t), "--http", "127.0.0.1:0"}, args...)
	d := env.StartDaemon(args...)
	info := httpInfo(t, env)
	if info.PID != d.PID() || !strings.HasPrefix(info.Addr, "127.0.0.1:") {
		t.Fatalf("%s: %+v, want the daemon's pid %d and a loopback address", store.HTTPFile, info, d.PID())
	}
	return d, strings.TrimSuffix(info.URL, "/")
}

// httpInfo waits for <state>/http.json and returns it.
func httpInfo(t *testing.T, env *mmtest.Env) store.HTTPInfo {
	t.Helper()
	var info *store.HTTPInfo
	env.Eventually(wait, func() error {
		var err error
		if info, err = env.Store().LoadHTTPInfo(); err == nil && info == nil {
			err = fmt.Errorf("no %s yet", store.HTTPFile)
		}
		return err
	})
	return *info
}

// busToken is the embedded bus' token, which the actions accept.
func busToken(t *testing.T, env *mmtest.Env) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(env.StateDir, "transit", "token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func httpGet(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// post sends an action; hdr are extra headers.
func post(t *testing.T, url string, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// TestHTTPMetrics scrapes a running tutorial: the output passes the
// Prometheus linter (promtool check metrics runs the same), and it
// carries the tasks' counters, the queues, the bus and the daemon's
// process and Go runtime.
func TestHTTPMetrics(t *testing.T) {
	env := mmtest.NewEnv(t)
	d, base := startHTTPDaemon(t, env)
	env.Configure(map[string]any{"MultiModule": fastMonitor(nil)})
	d.WaitOutput(t, `received a message: 2 \(howdy\)`, wait)
	handled := regexp.MustCompile(`(?m)^multimodule_task_messages_handled_total\{place="internal",task="Example2"\} ([1-9][0-9]*)$`)
	// A level at ok is a 0, as long as the monitor holds the metric.
	level := regexp.MustCompile(`(?m)^multimodule_task_alert_level\{metric="local\.admin\.passed_messages",place="internal",task="Example2"\} 0$`)
	var text string
	env.Eventually(wait, func() error {
		text = scrape(t, base)
		if !handled.MatchString(text) || !level.MatchString(text) {
			return fmt.Errorf("no handled messages of Example2, or no level of them, yet:\n%s", grepLines(text, "multimodule_task_"))
		}
		return nil
	})
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool is not installed: checked with promlint only")
	}
	for _, want := range []string{
		`multimodule_task_messages_emitted_total{place="internal",task="Example1"} `,
		`multimodule_task_up{place="internal",task="Example1"} 1`,
		`multimodule_task_failsafed{place="internal",task="Example1"} 0`,
		`multimodule_task_alert_level_max{place="internal",task="Example1"} 0`,
		"# TYPE multimodule_task_handler_seconds histogram",
		`multimodule_task_handler_seconds_bucket{place="internal",task="Example2",le="0.0025"} `,
		`multimodule_task_handler_seconds_bucket{place="internal",task="Example2",le="+Inf"} `,
		`multimodule_task_handler_seconds_sum{place="internal",task="Example2"} `,
		`multimodule_queue_capacity_messages{queue="Example2"} `,
		`multimodule_queue_fullness_ratio{queue="Example2"} `,
		"multimodule_bus_connected 1",
		"multimodule_bus_reconnects_total 0",
		"multimodule_bus_dead_letters 0",
		"multimodule_scrape_snapshot_ok 1",
		"multimodule_process_resident_memory_bytes ",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	// The handler histogram counts at least the handled messages.
	count := regexp.MustCompile(`(?m)^multimodule_task_handler_seconds_count\{place="internal",task="Example2"\} ([0-9]+)$`).FindStringSubmatch(text)
	if count == nil {
		t.Errorf("/metrics has no handler histogram count of Example2:\n%s", grepLines(text, "multimodule_task_handler"))
	} else if c, h := atoiOr0(count[1]), atoiOr0(handled.FindStringSubmatch(text)[1]); c < h {
		t.Errorf("handler histogram count %d < %d messages handled", c, h)
	}
	// No per-message series: every task series is labelled by task and
	// place only (and a histogram bucket by its bound).
	for _, line := range strings.Split(text, "\n") {
		want := 2
		if strings.HasPrefix(line, "multimodule_task_handler_seconds_bucket{") {
			want = 3
		}
		if strings.HasPrefix(line, "multimodule_task_") && !strings.HasPrefix(line, "multimodule_task_alert_level{") && strings.Count(line, "=") != want {
			t.Errorf("unexpected labels: %s", line)
		}
	}
	// At exit the listener's address goes.
	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, wait); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, d.Stderr)
	}
	if info, err := env.Store().LoadHTTPInfo(); info != nil || err != nil {
		t.Fatalf("after exit: %s holds %+v (%v), want it removed", store.HTTPFile, info, err)
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHTTPAPI reads the tasks, queues and alerts, checks that they say
// what `multimodule status` and `queues` say, and failsafes and
// unfailsafes a task through the API, watching the event stream.
func TestHTTPAPI(t *testing.T) {
	env := mmtest.NewEnv(t)
	d, base := startHTTPDaemon(t, env)
	d.WaitOutput(t, `received a message: 1 \(howdy\)`, wait)

	var tasks []observe.Task
	if code := httpGet(t, base+"/api/v1/tasks", &tasks); code != 200 {
		t.Fatalf("/api/v1/tasks: %d", code)
	}
	// Every task carries its rate history: a step of 10 s and a list of
	// rates (empty until two samples are taken).
	var raw []map[string]any
	if code := httpGet(t, base+"/api/v1/tasks", &raw); code != 200 || len(raw) == 0 {
		t.Fatalf("/api/v1/tasks: %d %v", code, raw)
	}
	for _, rt := range raw {
		rh, ok := rt["rate_history"].(map[string]any)
		if !ok {
			t.Fatalf("task %v: rate_history %#v, want an object", rt["task"], rt["rate_history"])
		}
		rates, ok := rh["per_sec"].([]any)
		if step, _ := rh["step_s"].(float64); !ok || step != 10 || len(rates) > observe.HistoryPoints {
			t.Fatalf("task %v: rate_history %#v, want step_s 10 and a list per_sec of at most %d", rt["task"], rh, observe.HistoryPoints)
		}
		for _, r := range rates {
			if v, ok := r.(float64); !ok || v < 0 {
				t.Fatalf("task %v: rate %#v in per_sec, want a number >= 0", rt["task"], r)
			}
		}
	}
	stdout, stderr, code := env.Run("status", "--json")
	if code != 0 {
		t.Fatalf("status --json: %d %s", code, stderr)
	}
	var status []observe.Task
	if err := json.Unmarshal([]byte(stdout), &status); err != nil {
		t.Fatal(err)
	}
	// status says "-" where it does not know; the daemon knows what it
	// hosts.
	names := func(ts []observe.Task) (out []string) {
		for _, t := range ts {
			where := t.Where
			if where == "-" {
				where = observe.PlaceInternal
			}
			out = append(out, t.Task+"/"+where+"/"+fmt.Sprint(t.PID, t.Failsafed))
		}
		return out
	}
	if a, b := names(tasks), names(status); !slices.Equal(a, b) {
		t.Fatalf("the API's tasks %v differ from status's %v", a, b)
	}
	// A page of another site whose name was made to resolve to 127.0.0.1
	// (DNS rebinding) sends its own name as Host: refused.
	rebind, _ := http.NewRequest("GET", base+"/api/v1/tasks", nil)
	rebind.Host = "evil.example:80"
	if resp, err := http.DefaultClient.Do(rebind); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a request for host evil.example: %d, want %d", resp.StatusCode, http.StatusMisdirectedRequest)
	}
	var one observe.Task
	if code := httpGet(t, base+"/api/v1/tasks/Example1", &one); code != 200 || one.Task != "Example1" || !one.Running || one.Place != observe.PlaceInternal {
		t.Fatalf("/api/v1/tasks/Example1: %d %+v", code, one)
	}
	if code := httpGet(t, base+"/api/v1/tasks/NoSuchTask", nil); code != 404 {
		t.Fatalf("/api/v1/tasks/NoSuchTask: %d, want 404", code)
	}
	var queues []observe.Queue
	if code := httpGet(t, base+"/api/v1/queues", &queues); code != 200 || !slices.ContainsFunc(queues, func(q observe.Queue) bool { return q.Name == "Example2" && q.CapacityMsgs > 0 }) {
		t.Fatalf("/api/v1/queues: %d %+v", code, queues)
	}

	stdout, stderr, code = env.Run("queues", "-a", "--json")
	if code != 0 {
		t.Fatalf("queues -a --json: %d %s", code, stderr)
	}
	var cliQueues []observe.Queue
	if err := json.Unmarshal([]byte(stdout), &cliQueues); err != nil {
		t.Fatal(err)
	}
	qnames := func(qs []observe.Queue) (out []string) {
		for _, q := range qs {
			if !strings.HasPrefix(q.Name, daemon.ReplyQueuePrefix) { // the CLI's own
				out = append(out, q.Name) // capacities differ: the daemon sees the queues it hosts in memory
			}
		}
		slices.Sort(out)
		return out
	}
	if a, b := qnames(queues), qnames(cliQueues); !slices.Equal(a, b) {
		t.Errorf("the API's queues %v differ from queues -a's %v", a, b)
	}

	// The event stream: a snapshot first, then what happens.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan [2]string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		for sc.Scan() {
			l := sc.Text()
			if v, ok := strings.CutPrefix(l, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(l, "data: "); ok {
				events <- [2]string{name, v}
			}
		}
		close(events)
	}()
	nextEvent := func(want string, f func(data string) bool) string {
		t.Helper()
		timeout := time.After(wait)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("event stream ended waiting for %s", want)
				}
				if ev[0] == want && (f == nil || f(ev[1])) {
					return ev[1]
				}
			case <-timeout:
				t.Fatalf("no %s event within %v", want, wait)
			}
		}
	}
	snap := nextEvent("snapshot", nil)
	if !strings.Contains(snap, `"task":"Example1"`) {
		t.Fatalf("first snapshot: %s", snap)
	}

	tok := busToken(t, env)
	url := base + "/api/v1/tasks/Example1/failsafe"
	for _, c := range []struct {
		why  string
		hdr  map[string]string
		code int
	}{
		{"no token", nil, 401},
		{"wrong token", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"a form post", map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"another origin", map[string]string{"Authorization": "Bearer " + tok, "Origin": "http://evil.example"}, 403},
	} {
		if code, body := post(t, url, "", c.hdr); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.why, code, body, c.code)
		}
	}
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs != nil {
		t.Fatalf("a refused request failsafed Example1: %v", fs)
	}
	auth := map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json", "Origin": base}
	if code, body := post(t, url, `{"reason":"api test"}`, auth); code != 200 {
		t.Fatalf("failsafe: %d %s", code, body)
	}
	nextEvent("alert", func(data string) bool {
		return strings.Contains(data, `"task":"Example1"`) && strings.Contains(data, `"failsafe":true`) && strings.Contains(data, `"by":"operator"`)
	})
	if code := httpGet(t, base+"/api/v1/tasks/Example1", &one); code != 200 || !one.Failsafed || one.Running || !strings.Contains(one.Why, "api test") {
		t.Fatalf("after failsafe: %d %+v", code, one)
	}
	if !strings.Contains(scrape(t, base), `multimodule_task_failsafed{place="internal",task="Example1"} 1`) {
		t.Errorf("/metrics does not show Example1 failsafed")
	}
	var alerts []observe.Alert
	httpGet(t, base+"/api/v1/alerts", &alerts)
	if !slices.ContainsFunc(alerts, func(a observe.Alert) bool { return a.Task == "Example1" && a.Failsafe }) {
		t.Fatalf("/api/v1/alerts has no failsafe of Example1: %+v", alerts)
	}
	if code, body := post(t, base+"/api/v1/tasks/main/failsafe", "", auth); code != 409 || !strings.Contains(body, "never failsafed") {
		t.Errorf("failsafe main: %d %s, want 409 and why", code, body)
	}
	if code, body := post(t, base+"/api/v1/tasks/Example1/unfailsafe", "", auth); code != 200 {
		t.Fatalf("unfailsafe: %d %s", code, body)
	}
	nextEvent("alert", func(data string) bool {
		return strings.Contains(data, `"task":"Example1"`) && strings.Contains(data, `"unfailsafe":true`)
	})
	env.Eventually(wait, func() error {
		httpGet(t, base+"/api/v1/tasks/Example1", &one)
		if one.Failsafed || !one.Running {
			return fmt.Errorf("Example1 after unfailsafe: %+v", one)
		}
		return nil
	})
}

// TestHTTPNonLoopbackNeedsToken: a listener other processes can reach is
// refused without --http-token; with one, reads need the token too.
func TestHTTPNonLoopbackNeedsToken(t *testing.T) {
	env := mmtest.NewEnv(t)
	_, stderr, code := env.Run("-p", "MultiModuleTest", "--http", "0.0.0.0:0")
	if code == 0 || !strings.Contains(stderr, "not a loopback address") || !strings.Contains(stderr, "--http-token") {
		t.Fatalf("--http 0.0.0.0:0 without a token: exit %d, stderr %s", code, stderr)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.StartDaemon("-p", "MultiModuleTest", "--http", "0.0.0.0:0", "--http-token", tokFile)
	info := httpInfo(t, env)
	_, port, _ := strings.Cut(info.Addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(info.Addr, ":")
	}
	base := "http://127.0.0.1:" + port
	if code := httpGet(t, base+"/api/v1/tasks", nil); code != 401 {
		t.Fatalf("a read without the token on a non-loopback listener: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("multimodule_bus_connected 1")) {
		t.Fatalf("/metrics with the token: %d %.300s", resp.StatusCode, b)
	}
	// The page itself loads without the token (it asks for it).
	if code := httpGet(t, base+"/", nil); code != 200 {
		t.Fatalf("/: %d", code)
	}
}

// TestHTTPExternalTaskAndLevels: an external task is reported through
// the daemon (its process' usage, the counters its external counts), a
// monitor level change reaches the event stream, the alerts and the
// metrics, and the external processes are not given --http.
func TestHTTPExternalTaskAndLevels(t *testing.T) {
	env := mmtest.NewEnv(t)
	_, base := startHTTPDaemon(t, env)
	const fail = "local.admin.task_message_failure"
	env.Configure(map[string]any{
		"MultiModule":         fastMonitor(nil), // default thresholds: severe above 0.1 failures/s
		"OtherExternalModule": map[string]any{"is_external": true},
	})
	var one observe.Task
	env.Eventually(wait, func() error {
		httpGet(t, base+"/api/v1/tasks/OtherExternalModule", &one)
		if !one.Running || one.Place != observe.PlaceExternal || one.Process == nil || one.Process.RSSBytes == 0 {
			return fmt.Errorf("OtherExternalModule not reported running as an external with its process yet: %+v", one)
		}
		return nil
	})
	for pid, cmdline := range env.Processes() {
		if strings.Contains(cmdline, "OtherExternalModule") && strings.Contains(cmdline, "--http") {
			t.Errorf("the external process %d was given --http: %s", pid, cmdline)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	levelSeen := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		level := false
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "event: level":
				level = true
			case strings.HasPrefix(l, "data: ") && level:
				if strings.Contains(l, `"task":"OtherExternalModule"`) && strings.Contains(l, fail) && strings.Contains(l, `"level":"severe"`) {
					levelSeen <- l
					return
				}
			case l == "":
				level = false
			}
		}
	}()
	for range 20 {
		env.Send("OtherExternalModule", map[string]any{"uncaught_exception": 1})
	}
	select {
	case <-levelSeen:
	case <-time.After(wait):
		t.Fatalf("no level event for %s of OtherExternalModule", fail)
	}
	var alerts []observe.Alert
	httpGet(t, base+"/api/v1/alerts", &alerts)
	if !slices.ContainsFunc(alerts, func(a observe.Alert) bool {
		return a.Task == "OtherExternalModule" && a.Metric == fail && a.Level == "severe" && a.Window != ""
	}) {
		t.Fatalf("/api/v1/alerts has no severe %s of OtherExternalModule: %+v", fail, alerts)
	}
	env.Eventually(wait, func() error {
		text := scrape(t, base)
		for _, re := range []string{
			`multimodule_task_alert_level\{metric="` + regexp.QuoteMeta(fail) + `",place="external",task="OtherExternalModule"\} 2`,
			`multimodule_task_alert_level_max\{place="external",task="OtherExternalModule"\} 2`,
			`multimodule_task_messages_failed_total\{place="external",task="OtherExternalModule"\} [1-9]`,
			`multimodule_task_restarts_total\{place="external",task="OtherExternalModule"\} [1-9]`,
			`multimodule_task_resident_memory_bytes\{place="external",task="OtherExternalModule"\} [1-9]`,
			`multimodule_task_cpu_seconds_total\{place="external",task="OtherExternalModule"\} `,
			`multimodule_task_open_fds\{place="external",task="OtherExternalModule"\} [1-9]`,
		} {
			if !regexp.MustCompile(`(?m)^` + re).MatchString(text) {
				return fmt.Errorf("/metrics has no %s:\n%s", re, grepLines(text, "multimodule_task_"))
			}
		}
		return nil
	})
}

func TestResolveHTTPAddr(t *testing.T) {
	for _, c := range []struct {
		in, want string
		token    bool
		err      string
	}{
		{in: "7070", want: "127.0.0.1:7070"},
		{in: ":7070", want: "127.0.0.1:7070"},
		{in: "127.0.0.1:0", want: "127.0.0.1:0"},
		{in: "localhost:7070", want: "localhost:7070"},
		{in: "[::1]:7070", want: "[::1]:7070"},
		{in: "0.0.0.0:7070", err: "not a loopback address"},
		{in: "example.com:7070", err: "not a loopback address"},
		{in: "0.0.0.0:7070", token: true, want: "0.0.0.0:7070"},
		{in: "1.2.3.4:x:y", err: "want host:port"},
	} {
		got, err := daemon.ResolveHTTPAddr(c.in, c.token)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %q, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
