package transit

import "errors"

// Sentinel errors; test with errors.Is. Errors returned by this package
// wrap them with the queue name and what was attempted.
var (
	// ErrFull: the queue is at capacity (a nonblocking send, or a
	// blocking send whose context ended while waiting for room).
	ErrFull = errors.New("transit: queue full")
	// ErrEmpty: TryReceive found no waiting message.
	ErrEmpty = errors.New("transit: queue empty")
	// ErrClosed: the Transit (or the local queue) is closed.
	ErrClosed = errors.New("transit: closed")
	// ErrUnknownHost: a send's Destination names a host whose host
	// scope does not exist on the bus (no process of that host opened
	// it).
	ErrUnknownHost = errors.New("transit: unknown host")
	// ErrNoBus: no embedded bus runs in the transport directory and the
	// caller asked not to start one (Options.NoStartBus).
	ErrNoBus = errors.New("transit: no embedded bus runs")
	// ErrBusInUse: StopBus found other clients on the bus and left it
	// running.
	ErrBusInUse = errors.New("transit: the bus is in use")
	// ErrTooLarge: the encoded message exceeds MaxMessageBytes.
	ErrTooLarge = errors.New("transit: message too large")
)

// MaxMessageBytes is the largest encoded (JSON) message the bus carries:
// 8 MiB.
const MaxMessageBytes = 8 << 20

// DeadLetterQueue is the queue, in each host scope, that receives messages
// which could not be delivered: after MaxDeliver deliveries that never
// completed, or when their bytes are not a message (not a JSON object in
// exact UTF-8, or a batch that is not valid: one dead letter for the
// whole bus message). The reason is in .ipc_transit_meta.dead_letter:
// {reason, queue, deliveries, seq, host, time}; bytes that were not a
// message are kept exactly in raw, with raw_encoding "utf-8" or
// "base64". When it is full, its oldest dead letters are dropped to make
// room, with an alert. Read it like any queue:
// `multimodule recv MultiModule_dead_letter`.
const DeadLetterQueue = "MultiModule_dead_letter"
