package host_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
)

// TestInlineCountsComplete: the messages a task handles inline are
// counted on the goroutine that handles them and reach the task's
// counters in bulk; once the emitter's turn is over every one of them is
// there — passed messages, the handler latency histogram and the handler
// time — also for a burst that is not a multiple of the bulk size.
func TestInlineCountsComplete(t *testing.T) {
	f, _ := inlineFixture(t, "InlineSink")
	ctx := context.Background()
	c := f.h.Counters()
	const burst = 1000 // not a multiple of 64
	for run := range 3 {
		if err := f.h.Send(ctx, "Emitter1", message.Message{"burst": burst, "run": run}); err != nil {
			t.Fatal(err)
		}
		want := uint64((run + 1) * burst)
		f.waitMsgs(t, "InlineSink", int(want))
		mmtest.Eventually(t, 10*time.Second, func() error {
			for _, name := range []string{host.RouterName, "InlineSink"} {
				passed := c.Get(name, host.MetricPassedMessages)
				var hist uint64
				for _, m := range host.HandlerBucketMetrics {
					hist += c.Get(name, m)
				}
				hist += c.Get(name, host.MetricHandlerOverflow)
				if passed != want || hist != want {
					return fmt.Errorf("%s: %d passed, %d in the handler histogram; want %d", name, passed, hist, want)
				}
				if c.Get(name, host.MetricHandlerNanos) == 0 {
					return fmt.Errorf("%s: no handler time", name)
				}
			}
			return nil
		})
	}
	if n := f.h.Inlined("InlineSink"); n == 0 {
		t.Fatal("no message to InlineSink was handled inline: the test did not test the inline path")
	} else {
		t.Logf("%d of %d messages to InlineSink handled inline", n, 3*burst)
	}
}
