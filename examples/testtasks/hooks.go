package testtasks

import (
	"os"
	"syscall"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/task"
)

// processHooks are the OtherExternalModule hooks that act on the process:
// crash_me kills the process hosting the task with SIGKILL — only in an
// external process; in the daemon it is refused with an error, so a test
// fixture can never take the daemon down.
func processHooks(tc *task.Context, msg message.Message) error {
	if message.Truthy(msg["crash_me"]) {
		if tc.Process() == "main" {
			tc.Error("crash_me ignored: " + tc.Name() + " runs inside the daemon")
			return nil
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // wait for the signal to land
	}
	return nil
}
