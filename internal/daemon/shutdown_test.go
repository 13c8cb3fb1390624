package daemon_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/transit"
)

// TestCleanShutdownUnderLoad: cleanly_exit or SIGTERM while a sender
// streams at full speed loses nothing the bus accepted: a new daemon
// delivers the rest, each message once and in order.
func TestCleanShutdownUnderLoad(t *testing.T) {
	for _, how := range []string{"cleanly_exit", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			env := mmtest.NewEnv(t)
			d := env.StartDaemon("-p", "MultiModuleTest")
			env.Configure(otherModuleConfig(1))
			probe(t, env, -1) // configured and flowing
			tr := env.Client()
			ctx, stop := context.WithCancel(t.Context())
			var (
				wg   sync.WaitGroup
				sent int
			)
			wg.Go(func() {
				for ctx.Err() == nil {
					err := tr.Send(ctx, "OtherModule", message.Message{"ct": sent}, transit.SendOptions{})
					if err != nil {
						return // only when stopped: the bus is up throughout
					}
					sent++
				}
			})
			// Let the stream run, then ask the daemon to exit while it goes on.
			mmtest.Eventually(t, wait, func() error {
				st, err := tr.Stat(t.Context(), "test_out")
				if err != nil || st.Msgs < 500 {
					return fmt.Errorf("test_out holds %d outputs (%v), waiting for 500", st.Msgs, err)
				}
				return nil
			})
			if how == "SIGTERM" {
				if err := d.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			} else {
				env.Send("MultiModule_control", message.Message{".multimodule": map[string]any{"control": []any{map[string]any{"type": "cleanly_exit"}}}})
			}
			if code := d.Wait(t, wait); code != 0 {
				t.Fatalf("%s: exit code %d, want 0; stderr:\n%s", how, code, tail(d.Stderr.String(), 3000))
			}
			stop()
			wg.Wait()
			t.Logf("%d messages accepted by the bus, the daemon exited during the stream", sent)
			env.StartDaemon("-p", "MultiModuleTest")
			if _, dups := stream(t, env, "test_out", sent, 1); dups != 0 {
				t.Fatalf("%d duplicates after a clean exit, want 0", dups)
			}
		})
	}
}
