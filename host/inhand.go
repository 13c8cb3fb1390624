package host

import "github.com/multimodule/multimodule/message"

// InHand follows the message a task's handler is handling, for the report
// of the handler's failure: once the handler sent that message on, its
// new owner may be changing it, and the report must not read it; a send
// that failed handed it to nobody (not into a mailbox, not onto the bus),
// and the handler owns it again. Used by the task's goroutine only.
type InHand struct {
	m    message.Message
	gave bool
}

// Take starts the handling of m.
func (h *InHand) Take(m message.Message) { h.m, h.gave = m, false }

// Drop ends the handling.
func (h *InHand) Drop() { h.m = nil }

// Sending notes that the handler sends msg on. It reports whether this
// send gives the message in hand away: then, should the send fail, call
// SendFailed.
func (h *InHand) Sending(msg message.Message) bool {
	if h.m != nil && !h.gave && message.Same(msg, h.m) {
		h.gave = true
		return true
	}
	return false
}

// SendFailed notes that the send that gave the message away failed.
func (h *InHand) SendFailed() { h.gave = false }

// Text is the message in hand for a failure report: its JSON, or a note
// that the handler sent it on.
func (h *InHand) Text() string {
	if h.gave {
		return "(sent on by the handler, not shown)"
	}
	b, _ := message.Marshal(h.m)
	return string(b)
}
