package host_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/registry"
	"github.com/multimodule/multimodule/transit"
)

// slowTask takes about 20 µs per message and records the seq of each.
type slowTask struct {
	mu   *sync.Mutex
	seqs *[]int64
}

func (s slowTask) Message(tc *task.Context, msg message.Message) error {
	for start := time.Now(); time.Since(start) < 20*time.Microsecond; {
	}
	seq, _ := message.Int(msg["seq"])
	s.mu.Lock()
	*s.seqs = append(*s.seqs, seq)
	s.mu.Unlock()
	return nil
}

// A task loaded while its bus queue holds a backlog catches up with it
// (this process' sends to it go through the bus, behind the backlog) and
// then takes sends in its mailbox — even while a sender in this process
// sends to it as fast as it can, faster than the task handles messages.
// Unless such a sender is held back on the bus path, the backlog never
// runs out and the task stays on the bus path for good: the sender waits
// as for room in a full mailbox, and pauses a moment when the backlog is
// short. Nothing is lost or reordered.
func TestCatchUpEndsUnderSteadySends(t *testing.T) {
	env := mmtest.NewEnv(t)
	var mu sync.Mutex
	var seqs []int64
	reg := registry.New()
	reg.MustRegister(task.Definition{Namespace: "T", Name: "Slow", New: func() (task.Task, error) {
		return slowTask{mu: &mu, seqs: &seqs}, nil
	}})
	h, ctx := runHost(t, host.Options{
		Transit:     env.Client(),
		Store:       env.Store(),
		Sources:     registry.Sources{registry.Default().Namespace(task.Builtin), reg.Namespace("T")},
		MailboxSize: 64,
		Out:         func(ch, tk, text string, d map[string]any) {},
	})
	const backlog = 2000
	for i := range backlog {
		if err := env.Client().Send(ctx, "Slow", message.Message{"seq": int64(i)}, transit.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ConfigureAll(map[string]any{"Slow": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	sent := make(chan int64, 1)
	failed := make(chan error, 1)
	go func() {
		seq := int64(backlog)
		defer func() { sent <- seq }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.Send(ctx, "Slow", message.Message{"seq": seq}); err != nil {
				failed <- err
				return
			}
			seq++
		}
	}()
	mmtest.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-failed:
			t.Fatal(err)
		default:
		}
		if !h.Settled("Slow") {
			mu.Lock()
			n := len(seqs)
			mu.Unlock()
			return fmt.Errorf("Slow still catches up with its bus queue (%d handled)", n)
		}
		return nil
	})
	close(stop)
	n := <-sent
	mmtest.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if int64(len(seqs)) != n {
			return fmt.Errorf("handled %d of %d", len(seqs), n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	var errs []error
	for i, s := range seqs {
		if s != int64(i) {
			errs = append(errs, fmt.Errorf("message %d handled was seq %d", i, s))
			if len(errs) == 5 {
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}
