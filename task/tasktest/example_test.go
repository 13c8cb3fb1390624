package tasktest_test

import (
	"fmt"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/tasktest"
)

// Counter counts messages in its state and reports the count every few
// seconds (config intervals.report overrides it). It is stateful: its
// task.Definition says so (Stateful: true).
type Counter struct{}

func (Counter) SetConfig(tc *task.Context, config map[string]any) error {
	tc.NamedRecur("report", 5*time.Second, func(tc *task.Context) {
		_ = tc.Emit(message.Message{"count": tc.State()["count"]})
	})
	return nil
}

func (Counter) Message(tc *task.Context, msg message.Message) error {
	n, _ := message.Int(tc.State()["count"])
	tc.State()["count"] = n + 1
	return nil
}

func Example() {
	rec := tasktest.New("Counter", map[string]any{"intervals": map[string]any{"report": 1}})
	if err := rec.Start(Counter{}); err != nil {
		fmt.Println(err)
	}
	_ = rec.Message(message.Message{"x": 1})
	_ = rec.Message(message.Message{"x": 2})
	_ = rec.RunRecur("report") // nothing runs by itself: the test says when

	fmt.Println(rec.Recurs())
	fmt.Println(rec.Emitted())
	// Output:
	// map[report:1s]
	// [map[count:2 source:Counter]]
}

// Forwarder sends every message with a "to" field straight to that queue,
// and logs what it did.
var Forwarder = task.Func(func(tc *task.Context, msg message.Message) error {
	to, _ := msg["to"].(string)
	if to == "" {
		tc.Alert("message without a destination", "keys", len(msg))
		return nil
	}
	tc.Log("forwarding", "to", to)
	return tc.Send(to, msg)
})

func ExampleRecorder_Sent() {
	rec := tasktest.New("Forwarder", nil)
	_ = rec.Start(Forwarder)
	_ = rec.Message(message.Message{"to": "Archive", "n": 1})
	_ = rec.Message(message.Message{"to": "Archive", "n": 2})
	fmt.Println(rec.Sent("Archive"))
	fmt.Println(rec.Message(message.Message{"to": "no spaces allowed"}))
	// Output:
	// [map[n:1 to:Archive] map[n:2 to:Archive]]
	// task Forwarder: send to no spaces allowed: transit: invalid queue name "no spaces allowed": character ' ' at byte 2 (allowed: letters, digits, '_', '-', '.')
}

func ExampleRecorder_Records() {
	rec := tasktest.New("Forwarder", nil)
	_ = rec.Start(Forwarder)
	_ = rec.Message(message.Message{"to": "Archive"})
	_ = rec.Message(message.Message{})
	for _, r := range rec.Records() {
		fmt.Println(r.Channel, r.Text, r.Details)
	}
	fmt.Println(rec.Texts("alert"))
	// Output:
	// log forwarding map[to:Archive]
	// alert message without a destination map[keys:0]
	// [message without a destination]
}

func ExampleRecorder_Restart() {
	rec := tasktest.New("Counter", nil)
	_ = rec.Start(Counter{})
	_ = rec.Message(message.Message{})
	_ = rec.Message(message.Message{})

	// The daemon restarts: a new instance gets the saved state.
	if err := rec.Restart(Counter{}); err != nil {
		fmt.Println(err)
	}
	_ = rec.Message(message.Message{})
	fmt.Println(rec.State()["count"])
	// Output:
	// 3
}

// Greeter keeps its greeting from the config, and counts its SetConfig
// calls.
type Greeter struct{ configured int }

func (g *Greeter) SetConfig(tc *task.Context, config map[string]any) error {
	if _, ok := config["greeting"].(string); !ok {
		return fmt.Errorf("greeting: want a string, got %v", config["greeting"])
	}
	g.configured++
	return nil
}

func (g *Greeter) Message(tc *task.Context, msg message.Message) error {
	return tc.Emit(message.Message{"text": fmt.Sprint(tc.Config()["greeting"], ", ", msg["name"])})
}

func ExampleRecorder_Configure() {
	g := &Greeter{}
	rec := tasktest.New("Greeter", map[string]any{"greeting": "Hello"})
	_ = rec.Start(g)

	// An identical resend does not call SetConfig; a change does.
	_ = rec.Configure(map[string]any{"greeting": "Hello"})
	_ = rec.Configure(map[string]any{"greeting": "Hi"})
	// A rejected config keeps the previous one.
	fmt.Println(rec.Configure(map[string]any{"greeting": 42}))

	_ = rec.Message(message.Message{"name": "Ann"})
	fmt.Println(g.configured, rec.Emitted()[0]["text"])
	// Output:
	// task Greeter: set config rejected: greeting: want a string, got 42
	// 2 Hi, Ann
}
