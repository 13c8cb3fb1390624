package exectask_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// TestPoisonMessageDeadLettered: a message that kills the co-process of
// an exec task, among normal ones, is given to a restarted co-process at
// most max_crash_redeliveries times (default 1) and then moved to the
// dead-letter queue with the crash's exit status; the other messages all
// come out in order, and the co-process restarts it caused do not
// failsafe the task (a failsafe on local.admin.start.coprocess would come
// before the alert on the failed messages: same task, same sample).
func TestPoisonMessageDeadLettered(t *testing.T) {
	for _, external := range []bool{false, true} {
		name := map[bool]string{false: "internal", true: "external"}[external]
		t.Run(name, func(t *testing.T) {
			env := mmtest.NewEnv(t)
			d := env.StartDaemon("-p", absDir(t, testdata), "-o", "alert:alerts_q")
			env.Configure(map[string]any{
				"MultiModule": map[string]any{
					"intervals": map[string]any{"sample": 0.05, "evaluate": 0.1},
					"windows":   map[string]any{"one_minute": 10, "five_minutes": 20},
					"thresholds": map[string]any{
						// Failsafe at a third restart within 10 s.
						"local.admin.start.coprocess": map[string]any{"levels": []any{map[string]any{"failsafe": 0.25}}},
						"local.admin.start.external":  map[string]any{"levels": []any{}},
					},
				},
				"Router": routes("Probe"),
				"Probe":  map[string]any{"is_external": external},
			})
			if external {
				externalPID(t, env, d, "Probe")
			}
			const n = 20
			poison := map[int]int{5: 1, 12: 2} // after n → poison number
			for i := range n {
				env.Send("Probe", message.Message{"n": i})
				if k, ok := poison[i]; ok {
					env.Send("Probe", message.Message{"crash": true, "poison": k})
				}
			}
			for i := range n {
				m := env.Recv("out_Probe", wait)
				if got, _ := message.Int(m["n"]); got != int64(i) {
					t.Fatalf("got %v, want n %d (lost or reordered)", m, i)
				}
			}
			for k := 1; k <= len(poison); k++ {
				dl := env.Recv(transit.DeadLetterQueue, wait)
				meta, _ := dl[".ipc_transit_meta"].(map[string]any)
				info, _ := meta["dead_letter"].(map[string]any)
				crashes, _ := message.Int(info["crashes"])
				if p, _ := message.Int(dl["poison"]); p != int64(k) || info["exit_status"] != "exit status 7" || crashes != 2 ||
					!strings.Contains(info["reason"].(string), "exit status 7") {
					t.Fatalf("dead letter %d: %v, want poison message %d after 2 crashes with exit status 7", k, dl, k)
				}
			}
			// The failed messages are alerted; no failsafe before.
			recvAlert(t, env, "alerts_q", func(a map[string]any) bool {
				if a["task_name"] == "Probe" && a["level"] == "failsafe" {
					t.Fatalf("failsafed: %v", a)
				}
				return a["task_name"] == "Probe" && a["bucket_metric"] == "local.admin.task_message_failure"
			})
			if fs, _ := env.Store().ReadFailsafe("Probe"); fs != nil {
				t.Fatalf("failsafed: %v", fs)
			}
			logs := d.Stderr.String()
			if external {
				b, _ := os.ReadFile(filepath.Join(env.StateDir, "Probe.log"))
				logs += string(b)
			}
			if got := strings.Count(logs, "Probe: crashing as asked"); got != 2*len(poison) {
				t.Fatalf("the co-process crashed %d times, want %d (2 per poison message)", got, 2*len(poison))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			if m, err := env.Client().Receive(ctx, transit.DeadLetterQueue); err == nil {
				t.Fatalf("an extra dead letter: %v", m)
			}
		})
	}
}
