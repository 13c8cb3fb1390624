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

func (Counter) Stateful() bool { return true }

func Example() {
	// A task package registers its tasks from init:
	reg := task.NewRegistry() // task.Register(...) uses the default registry
	reg.MustRegister(task.Definition{
		Namespace: "MyTasks",
		Name:      "Counter",
		Stateful:  true,
		New:       func() (task.Task, error) { return Counter{}, nil },
	})

	// The daemon (-p MyTasks) finds and builds it:
	def, _ := task.Sources{reg.Namespace("MyTasks")}.Lookup("Counter")
	t, err := task.Build(def)
	fmt.Println(def.Name, def.Stateful, err)

	// Unit-test it with package tasktest, the task's host in a test.
	rec := tasktest.New("Counter", map[string]any{"intervals": map[string]any{"report": 1}})
	_ = rec.Start(t)
	_ = rec.Message(message.Message{"x": 1})
	_ = rec.Message(message.Message{"x": 2})
	_ = rec.RunRecur("report")
	fmt.Println(rec.Recurs(), rec.Emitted())
	// Output:
	// Counter true <nil>
	// map[report:1s] [map[count:2 source:Counter]]
}
