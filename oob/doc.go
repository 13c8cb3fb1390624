// Package oob carries MultiModule's out-of-band channels: the records a
// task or the framework writes beside its messages.
//
// A channel is a name: the four standard ones are "log", "error", "alert"
// and "debug", and a task may write to any other. Each record (Record)
// carries its text, the channel, the task, the writing process's pid, a time
// and optional structured details (an alert carries the whole alert there).
//
// A Dispatcher decides where each channel goes, from a Handling ("-o
// log:1,error:2,alert:QUEUE,debug:./debug.out"):
//
//	1        standard output (human lines on a terminal, journal lines on the
//	         systemd journal's stream, JSON lines otherwise)
//	2        standard error  (likewise)
//	a/path   any value containing "/": appended to that file as JSON lines;
//	         re-opened when the file is rotated away
//	router   emitted as a message (Record.Message) and routed like one
//	QUEUE    any other value: sent as a message to that queue
//
// A channel without handling goes where "error" goes. Per-channel filters
// (SetFilters, the OutOfBand task's include_matches / exclude_matches) pass
// or drop records live. Debug records cost nothing while the debug level is
// 0: they are dropped before any work, and the slog bridge reports
// Enabled(Debug) == false so callers never build them.
//
// Framework code logs through log/slog; NewSlogHandler turns slog records
// into channel records, so one logging path serves tasks and framework.
//
// Delivery never panics and never blocks forever: a sink that fails is
// reported once on the "error" channel (until it works again), and if the
// error channel itself fails the report is written to standard error as a
// last resort.
package oob
