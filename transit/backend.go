package transit

import (
	"context"

	"github.com/multimodule/multimodule/message"
)

// backend is the shared transport behind a Transit. Hosting code never
// sees it: it uses the Transit API, so another backend (an IPC::Transit
// compatible SysV one is planned) can be added by implementing these
// methods. scope is a sanitized host scope; qname a validated queue name;
// data the message's JSON encoding.
type backend interface {
	// publish stores data in queue qname of scope. With wait, it returns
	// once the message is durably stored (or the send failed); without,
	// it may return before, and flush reports the outcome. A non-empty id
	// is the message's own ID on the bus (see HostSendOptions.MsgID).
	publish(ctx context.Context, scope, qname string, data []byte, wait bool, id string) error
	// flush waits until every publish so far is stored; it returns the
	// errors of those that failed since the last flush.
	flush(ctx context.Context) error
	// consume makes the caller the owner of queue qname of scope.
	consume(ctx context.Context, scope, qname string) (*Consumer, error)
	// receive takes one message off the queue (acknowledged). Without
	// wait it returns ErrEmpty when none is waiting.
	receive(ctx context.Context, scope, qname string, wait bool) (message.Message, error)
	// stat describes one queue; list every queue known in scope (with
	// all), or only those holding messages.
	stat(ctx context.Context, scope, qname string) (QueueStat, error)
	list(ctx context.Context, scope string, all bool) ([]QueueStat, error)
	// hosts lists the host scopes on the bus, sorted.
	hosts(ctx context.Context) ([]string, error)
	// close flushes and releases the backend; it stops every consumer.
	close() error
}
