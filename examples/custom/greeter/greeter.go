// Package greeter registers MyTasks::Greeter, a stateless task that emits
// every message it gets with a greeting added ("hello, <name>", where name
// is the message's name field and the greeting word comes from the config).
package greeter

import (
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

func init() {
	task.Register(task.Definition{
		Namespace: "MyTasks",
		Name:      "Greeter",
		New:       func() (task.Task, error) { return task.Func(greet), nil },
	})
}

func greet(tc *task.Context, msg message.Message) error {
	word, _ := tc.Config()["word"].(string)
	if word == "" {
		word = "hello"
	}
	msg["greeting"] = fmt.Sprintf("%s, %v", word, msg["name"])
	return tc.Emit(msg)
}
