// Package transit carries messages between MultiModule tasks through named
// queues: in memory for a queue hosted in the sending process
// (a [Local] queue), and through a shared bus for everything else.
//
// The bus is NATS JetStream. With no NATS URL in [Options], the bus is an
// embedded nats-server running in its own detached process (`multimodule
// bus`), found and, when needed, started through files in the transport
// directory: bus.json (url, pid, process start time), token (the random
// auth token, mode 0600), bus.log and the JetStream store. With a URL,
// everything uses that server or cluster and nothing is started.
//
// Layout on the bus: one stream per host scope, named MM_<scope> (created
// only by a process whose own host scope it is, when it opens the bus;
// sized from the free space, see Capacity), with
// interest retention (a message stays until its queue's consumer
// acknowledged it; JetStream refuses AckAll on work-queue streams), file
// storage and subjects
//
//	<prefix>.<scope>.q.<encoded qname>
//
// where the default prefix is "mm" and the encoded queue name is the queue
// name with every "." replaced by "~" (queue names never contain "~", so
// the mapping is one to one and each queue is one subject token). Each
// queue has one durable pull consumer named q_<encoded qname>, owned by the
// process hosting that queue's task ([Transit.Consume]) or used by one-shot
// receivers ([Transit.Receive]). Senders create that consumer before a
// queue's first message, so the stream keeps messages nobody reads yet.
//
// Messages that pile up for one queue while an earlier one is on its way
// travel together in one bus message, marked with [BatchHeader]; a lone
// message is a bus message of its own, its payload the message's JSON.
//
// Delivery guarantees on the bus: a message whose [Transit.Send] returned
// nil is stored on disk; the owner acknowledges it after handling; a
// consumer that dies mid-message makes the next owner start again at the
// first unacknowledged message (the JetStream consumer is reset to its ack
// floor on take-over, so order is kept; a batch comes again whole, unless
// its previous owner stopped cleanly and recorded how far it got); a
// message that was in flight each time MaxDeliver owners died (or that the
// server redelivered more than MaxDeliver times) is moved to
// [DeadLetterQueue] with the reason in .ipc_transit_meta.dead_letter (for
// a batch: every message of it not done yet; a bus message that is not a
// valid batch, or not a message, is one dead letter with its exact
// bytes). An owner that knows which message killed its predecessor (an
// external task's process, with [Options].OwnerCountsCrashes: take-overs
// then count no deaths) moves that message alone with
// [Delivery.DeadLetter].
//
// The lifecycle of a [Transit]:
//
//  1. [Open] connects (starting the embedded bus if needed).
//  2. [Transit.Consume] takes ownership of a queue's bus consumer; a
//     process running tasks hosts in-memory queues with [InProcess.Host].
//  3. [Transit.Send] / [Transit.SendAsync] + [Transit.Flush] move messages.
//  4. [Consumer.Stop] and [InProcess.Unhost] hand queues back.
//  5. [Transit.Close] flushes and disconnects; the embedded bus keeps
//     running for the other processes that use it.
package transit
