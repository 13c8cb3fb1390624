// Package exectask runs tasks written in any language: an executable in a
// -p directory is a task, run as a co-process and spoken to over
// newline-delimited JSON on its stdin and stdout (the protocol is
// in docs/exec-protocol.md).
//
// Dir is the registry.Source for such a directory; Task is the adapter, an
// ordinary task.Task to the host, so an exec task runs internal (a
// co-process of the daemon) or external (a co-process of its own external
// process) and migrates like any other task.
//
// # Lifecycle of a co-process
//
//  1. Start runs the executable (working directory: its own directory;
//     environment: PATH, HOME, LANG and the MULTIMODULE_* variables only)
//     and waits for its hello: name, protocol versions, stateful. The host
//     answers with a welcome naming the negotiated version. A task that
//     cannot start, exits, writes garbage or stays silent fails the load;
//     the host reports it and retries with back-off while its messages
//     wait in its queue.
//  2. At the first SetConfig the co-process gets its state (stateful
//     tasks) and its config; then its messages, each answered by an ack.
//     With protocol 1 one request is in flight at a time; with protocol 2
//     the host writes the messages it announced (Ahead: a burst from the
//     mailbox) up to Spec.Window at once, and the task answers them in
//     order. Whatever the task writes before a message's ack (emits,
//     sends, state, out-of-band records, recurring ticks) is carried out
//     on the task's goroutine within that message's Message call. State,
//     config and tick requests are barriers: the messages in flight are
//     answered first, and nothing else is in flight while they are.
//  3. A co-process that dies, breaks the protocol or does not ack within
//     the message timeout is reported on the error channel (with its pid,
//     exit status and last stderr lines), killed, and restarted with
//     back-off at the next request. The message it was handling is tried
//     again on the new co-process, up to MaxAttempts in all; then the
//     handler fails (the host reports it with the message and counts it).
//     Every other message in flight goes to the new co-process too, one
//     at a time until they are done (so that a message that kills the
//     co-process is the one that fails).
//  4. Close closes its stdin, waits StopGrace and kills its process group.
//
// Stderr lines of the co-process go to the log channel.
package exectask
