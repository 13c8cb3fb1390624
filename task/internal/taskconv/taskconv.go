// Package taskconv holds the conventions that package task (the API task
// authors use) and package task/registry (the framework's side) both
// apply, so that each is written once: how a namespace may be spelled and
// how a config overrides the interval of a recurring job. Package
// task/registry exports them to the framework; task authors see their
// effect through task.Register and task.Context.NamedRecur.
package taskconv

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/multimodule/multimodule/message"
)

// Builtin is the namespace of the framework's own tasks (task.Builtin);
// an empty namespace means it.
const Builtin = "builtin"

// Namespace maps the spellings a namespace may have to its name:
// "MultiModuleTest::" and " MultiModuleTest" are "MultiModuleTest", and
// "" is Builtin.
func Namespace(ns string) string {
	ns = strings.TrimSuffix(strings.TrimSpace(ns), "::")
	if ns == "" {
		return Builtin
	}
	return ns
}

// IntervalOverride reads config intervals.<name> (seconds, a positive
// number or numeric string) as a duration.
func IntervalOverride(config map[string]any, name string) (time.Duration, bool) {
	iv, ok := config["intervals"].(map[string]any)
	if !ok {
		return 0, false
	}
	f, ok := message.Float(iv[name])
	if !ok || f <= 0 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// CheckDefinition checks what registering a task needs: a name and a
// constructor. namespace is already normalized (Namespace).
func CheckDefinition(namespace, name string, hasNew bool) error {
	if name == "" {
		return errors.New("task: register: empty task name")
	}
	if !hasNew {
		return fmt.Errorf("task: register %s::%s: nil New", namespace, name)
	}
	return nil
}

// Duplicate is the error for a second registration of namespace::name.
func Duplicate(namespace, name string) error {
	return fmt.Errorf("task: register %s::%s: already registered", namespace, name)
}
