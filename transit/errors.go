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
// completed, or when their bytes are not a JSON object. The reason is in
// .ipc_transit_meta.dead_letter: {reason, queue, deliveries, seq, host,
// time}. Read it like any queue: `multimodule recv MultiModule_dead_letter`.
const DeadLetterQueue = "MultiModule_dead_letter"
