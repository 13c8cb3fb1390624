package exectask_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// writeScript replaces dir/name with an executable script (a new file
// version, as an operator's edit would be).
func writeScript(t *testing.T, dir, name, script string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// pidsIn reads the pids a task script appended to dir/pids, one a line.
func pidsIn(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pids"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids file: %v", err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// recvAlert reads records from queue q until one's details satisfy f.
func recvAlert(t *testing.T, env *mmtest.Env, q string, f func(d map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	var seen []string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		rec, err := env.Client().Receive(ctx, q)
		cancel()
		if err != nil {
			break
		}
		d, _ := rec["details"].(map[string]any)
		seen = append(seen, fmt.Sprintf("%v %v=%v", d["task_name"], d["bucket_metric"], d["level"]))
		if d != nil && f(d) {
			return d
		}
	}
	t.Fatalf("no matching alert on %s within %v; saw: %v", q, wait, seen)
	return nil
}

// TestCoProcessCrashLoopIsFailsafed: an exec task whose co-process says
// hello and exits at once, every time, is restarted by the adapter; those
// restarts are counted (local.admin.start.coprocess) in the process that
// hosts the co-process — the daemon, or the task's external process, which
// reports them in its status — so the monitor sees the crash loop and
// failsafes the task with an alert naming it: the task is unloaded (its
// external process killed), no co-process of it is left or started again,
// and its messages wait in its queue. After the operator fixes the
// executable, unfailsafe brings the task back and it drains its queue in
// order.
func TestCoProcessCrashLoopIsFailsafed(t *testing.T) {
	for _, external := range []bool{false, true} {
		name := map[bool]string{false: "internal", true: "external"}[external]
		t.Run(name, func(t *testing.T) { testCrashLoop(t, external) })
	}
}

func testCrashLoop(t *testing.T, external bool) {
	const metric = "local.admin.start.coprocess"
	dir := t.TempDir()
	writeScript(t, dir, "Dies", `#!/bin/sh
# Dies: says hello, then exits at once, at every start.
printf '{"type":"hello","protocol":1,"stateful":true}\n'
[ "$MULTIMODULE_MODE" = describe ] && exit 0
echo $$ >> pids
read -r welcome
echo "Dies: exiting at once" >&2
exit 9
`)
	env := mmtest.NewEnv(t)
	d := env.StartDaemon("-p", dir, "-o", "alert:alerts_q")
	env.Configure(map[string]any{
		// The monitor's clocks shortened so that the test takes seconds:
		// windows of 1 s and 2 s, sampled every 50 ms. Failsafe above one
		// restart a second: the adapter restarts a co-process that died
		// 100 ms, 200 ms, 400 ms … later. (With windows this short the one
		// start of the external process is a rate of 1/s as well: starts of
		// externals are not what this test is about.)
		"MultiModule": map[string]any{
			"intervals": map[string]any{"sample": 0.05, "evaluate": 0.1},
			"windows":   map[string]any{"one_minute": 1, "five_minutes": 2},
			"thresholds": map[string]any{
				metric:                       map[string]any{"levels": []any{map[string]any{"failsafe": 1}, map[string]any{"warn": 0.4}}},
				"local.admin.start.external": map[string]any{"levels": []any{}},
			},
		},
		"Router": routes("Dies"),
		"Dies":   map[string]any{"is_external": external},
	})
	if external {
		externalPID(t, env, d, "Dies")
	}
	// Work for the adapter: it restarts the co-process for each message,
	// MaxAttempts times before it gives the message up. The backlog must
	// not be burnt through that way once the task is failsafed: it waits.
	const backlog = 10
	for i := range backlog {
		env.Send("Dies", message.Message{"n": i})
	}

	alert := recvAlert(t, env, "alerts_q", func(d map[string]any) bool {
		return d["task_name"] == "Dies" && d["bucket_metric"] == metric && d["level"] == "failsafe"
	})
	t.Logf("alert: %v", alert["summary"])
	var failsafeTS float64
	env.Eventually(wait, func() error {
		fs, err := env.Store().ReadFailsafe("Dies")
		if err != nil || fs == nil {
			return fmt.Errorf("Dies not failsafed yet (%v)", err)
		}
		if fs["bucket_metric"] != metric || fs["failsafed_by"] != "monitor" {
			return fmt.Errorf("failsafe file %v: want the monitor's %s alert", fs, metric)
		}
		failsafeTS, _ = message.Float(fs["failsafe_ts"])
		return nil
	})
	// Unloaded (the host writes the task's status when it has unloaded
	// it) or its external process gone; and none of its co-processes left.
	env.Eventually(wait, func() error {
		st, err := env.Store().LoadStatus("Dies")
		switch {
		case err != nil || st == nil:
			return fmt.Errorf("no status of Dies (%v)", err)
		case external && st.Running():
			return fmt.Errorf("the external process of the failsafed Dies still runs: %+v", st)
		case !external && st.SaveTS <= failsafeTS:
			return fmt.Errorf("Dies not unloaded yet (status %+v)", st)
		}
		for _, pid := range pidsIn(t, dir) {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("co-process %d of the failsafed task still there (kill -0: %v)", pid, err)
			}
		}
		return nil
	})
	starts := len(pidsIn(t, dir))
	if starts < 3 {
		t.Fatalf("%d starts of Dies' co-process, want the first and at least two restarts", starts)
	}
	where := d.Stderr.String()
	if external {
		// The external's records are forwarded to the daemon; its log
		// has the rest.
		b, _ := os.ReadFile(filepath.Join(env.StateDir, "Dies.log"))
		where += string(b)
	}
	for _, want := range []string{"exit status 9", "restarting in"} {
		if !strings.Contains(where, want) {
			t.Errorf("the crashes are not reported (%q):\n%s", want, where)
		}
	}

	// Failsafed: messages wait, nothing starts it.
	const last = backlog + 2
	for i := backlog; i <= last; i++ {
		env.Send("Dies", message.Message{"n": i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	m, err := env.Client().Receive(ctx, "out_Dies")
	cancel()
	if err == nil {
		t.Fatalf("a failsafed task produced %v", m)
	}
	if got := len(pidsIn(t, dir)); got != starts {
		t.Fatalf("%d starts after the failsafe, want none", got-starts)
	}

	// The operator fixes the task and clears the failsafe: it comes back
	// and drains its queue, in order.
	writeScript(t, dir, "Dies", `#!/bin/sh
# Dies, fixed: a stateful echo.
printf '{"type":"hello","protocol":1,"stateful":true}\n'
[ "$MULTIMODULE_MODE" = describe ] && exit 0
while IFS= read -r line; do
	id=$(printf '%s\n' "$line" | sed -n 's/^{"type":"[a-z_]*","id":\([0-9]*\).*/\1/p')
	[ -z "$id" ] && continue
	msg=$(printf '%s\n' "$line" | sed -n 's/^{"type":"message","id":[0-9]*,"message":\(.*\)}$/\1/p')
	[ -n "$msg" ] && printf '{"type":"emit","message":%s}\n' "$msg"
	printf '{"type":"ack","id":%s}\n' "$id"
done
`)
	if _, stderr, code := env.Run("unfailsafe", "Dies"); code != 0 {
		t.Fatalf("unfailsafe: exit %d: %s", code, stderr)
	}
	// What the crash loop had failed (the message it was handling when the
	// failsafe came, up to MaxAttempts restarts later: a prefix of the
	// backlog) is reported; everything else comes out, once and in order.
	var got []int64
	for len(got) == 0 || got[len(got)-1] != last {
		m := env.Recv("out_Dies", wait)
		n, _ := message.Int(m["n"])
		if m["source"] != "Dies" || (len(got) > 0 && n <= got[len(got)-1]) {
			t.Fatalf("after unfailsafe: got %v after %v, want the next n from Dies", m, got)
		}
		got = append(got, n)
	}
	t.Logf("after unfailsafe: n %d to %d came out", got[0], last)
	if got[0] > 3 || len(got) != last+1-int(got[0]) {
		t.Fatalf("after unfailsafe: got n %v, want every one from (at most) the fourth of the backlog on", got)
	}
	reports := d.Stderr.String()
	if external {
		b, _ := os.ReadFile(filepath.Join(env.StateDir, "Dies.log"))
		reports += string(b)
	}
	if failed := strings.Count(reports, "message handler failed"); failed < int(got[0]) {
		t.Fatalf("messages 0 to %d did not come out, and %d handler failures were reported", got[0]-1, failed)
	}
	if d.Exited() {
		t.Fatalf("daemon exited; stderr:\n%s", d.Stderr)
	}
}
