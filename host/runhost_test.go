package host_test

import (
	"context"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
)

// runHost builds a host from opts and runs it until the test ends; then
// it shuts the host down and waits (bounded) until Run returned. The
// context is the host's run context.
func runHost(tb testing.TB, opts host.Options) (*host.Host, context.Context) {
	tb.Helper()
	h, err := host.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	tb.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := h.Shutdown(sctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			tb.Error("the host did not stop (tasks still waiting for each other?)")
		}
	})
	return h, ctx
}
