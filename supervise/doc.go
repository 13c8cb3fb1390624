// Package supervise starts, adopts, watches and stops the external task
// processes of MultiModule. It is the
// process-level library; deciding what should run is the daemon's business.
//
// # Detach
//
// Start runs a process detached from the daemon: in a new session
// (setsid, so it has no controlling terminal and is its own process group
// leader), with stdin on /dev/null and stdout and stderr appended to a log
// file. No parent-death signal is set and the package never kills a
// process on Go's behalf (there is no context tied to it), so the process
// outlives the daemon that started it. While the daemon lives, a goroutine
// waits for the child so that it is reaped the moment it exits (no zombie
// lingers, and its identity stops being Alive at once); once the daemon has
// exited, the child is re-parented to init (or the nearest child subreaper),
// which reaps it instead.
//
// # Identity
//
// A pid alone does not name a process: the kernel hands pids out again. A
// process is named by a procid.Identity (pid + start time in clock ticks
// since boot + command line), which the daemon saves in the task's status
// file. Identity.Alive is true only for that very process.
//
// # Adopt
//
// A daemon that restarts finds the externals of its previous life still
// running. Adopt takes such a process by its saved identity: it checks the
// identity is alive, opens a pidfd (pidfd_open) for the pid, and checks the
// identity again, so the pidfd is known to refer to that very process and
// not to a later one that reused the pid. From then on the pidfd is the
// handle: its exit is noticed through the Go runtime's poller (epoll on the
// pidfd becomes readable when the process exits, within milliseconds, with
// no thread blocked and no /proc polling), and signals go through
// pidfd_send_signal, which can never reach another process. An adopted
// process is not our child, so its exit status cannot be known.
//
// Only when pidfd_open is unavailable (ENOSYS on kernels before 5.3, or
// EPERM from a seccomp filter that refuses it) does Adopt fall back to
// checking the identity every slowPoll (250 ms); then death is noticed that
// much later and a signal is sent with kill(2) after an identity check,
// which leaves a window of microseconds for a pid to be reused in between.
//
// # Stop and backoff
//
// Stop asks politely (SIGTERM), waits a grace period, then insists
// (SIGKILL) and waits for the exit, bounded by a context. Signals reach the
// process itself, not its descendants. Backoff is the crash-loop policy:
// the delay before restarting a process that keeps dying grows from Min to
// Max and resets after a run of at least ResetAfter.
package supervise
