package task_test

import (
	"fmt"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
	"github.com/multimodule/multimodule/task/tasktest"
)

// Counter is a stateful task: it counts the messages it sees, and every
// few seconds (config intervals.report overrides it) emits the count.
type Counter struct{}

func (Counter) SetConfig(tc *task.Context, config map[string]any) error {
	// Called on every config change: NamedRecur keeps one schedule.
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

// counter is how a task package describes Counter. Its init records it:
//
//	func init() { task.Register(counter) }
//
// and the daemon run with -p MyTasks can load it. Stateful is where a task
// says that it keeps state: the host saves and restores its Context.State.
var counter = task.Definition{
	Namespace: "MyTasks",
	Name:      "Counter",
	Stateful:  true,
	New:       func() (task.Task, error) { return Counter{}, nil },
}

func Example() {
	// Unit-test the task with package tasktest, the task's host in a test.
	t, err := counter.New()
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := tasktest.New(counter.Name, map[string]any{"intervals": map[string]any{"report": 1}})
	_ = rec.Start(t)
	_ = rec.Message(message.Message{"x": 1})
	_ = rec.Message(message.Message{"x": 2})
	_ = rec.RunRecur("report")
	fmt.Println(rec.Recurs(), rec.Emitted())
	// Output:
	// map[report:1s] [map[count:2 source:Counter]]
}

// Countdown emits its config's "from" down to 1, one number a second, then
// stops its own recurring job with the stop function NamedRecur returned.
type Countdown struct{ left int64 }

func (c *Countdown) SetConfig(tc *task.Context, config map[string]any) error {
	c.left, _ = message.Int(config["from"])
	var stop func()
	stop = tc.NamedRecur("tick", time.Second, func(tc *task.Context) {
		_ = tc.Emit(message.Message{"left": c.left})
		if c.left--; c.left <= 0 {
			stop()
		}
	})
	return nil
}

func (*Countdown) Message(*task.Context, message.Message) error { return nil }

func ExampleContext_NamedRecur() {
	rec := tasktest.New("Countdown", map[string]any{"from": 2})
	_ = rec.Start(&Countdown{})
	for range 3 {
		if err := rec.RunRecur("tick"); err != nil {
			fmt.Println("tick:", err)
		}
	}
	fmt.Println(rec.Emitted(), rec.Recurs())
	// Output:
	// tick: tasktest: Countdown has no recurring job "tick" (scheduled: [])
	// [map[left:2 source:Countdown] map[left:1 source:Countdown]] map[]
}
