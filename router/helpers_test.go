package router_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

// delivery is one message a recorder received.
type delivery struct {
	Forward router.Forward
	Msg     message.Message
}

// recorder is a Forwarder that keeps every delivery and refuses the
// queues listed in fail.
type recorder struct {
	mu   sync.Mutex
	got  []delivery
	fail map[string]error // by Forward.String()
}

func (r *recorder) Forward(_ context.Context, fwd router.Forward, msg message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fail[fwd.String()]; err != nil {
		return err
	}
	r.got = append(r.got, delivery{fwd, msg})
	return nil
}

func (r *recorder) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// mustJSON is the canonical JSON text of a message, for comparisons that
// do not care whether a number is an int64 or an integral float64.
func mustJSON(t *testing.T, m message.Message) string {
	t.Helper()
	b, err := message.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %v: %v", m, err)
	}
	return string(b)
}

// summary writes deliveries as one line each: "qname[@dest] <json>".
func summary(t *testing.T, ds []delivery) []string {
	t.Helper()
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = fmt.Sprintf("%s %s", d.Forward, mustJSON(t, d.Msg))
	}
	return out
}

func mustCompile(t testing.TB, config map[string]any) *router.Router {
	t.Helper()
	r, err := router.Compile(config)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return r
}

func mustMessage(t testing.TB, js string) message.Message {
	t.Helper()
	m, err := message.Unmarshal([]byte(js))
	if err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return m
}
