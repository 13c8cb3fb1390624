package host_test

import (
	"testing"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/message"
)

// The failure report of a handler shows the message in hand unless the
// handler gave it away with a send that succeeded; sending another
// message, or a copy, gives nothing away.
func TestInHandText(t *testing.T) {
	const hidden = "(sent on by the handler, not shown)"
	m := message.Message{"n": 1}
	var h host.InHand
	h.Take(m)
	if got := h.Text(); got != `{"n":1}` {
		t.Errorf("kept: got %q", got)
	}
	if h.Sending(message.Message{"n": 1}) || h.Sending(m.Copy()) {
		t.Error("sending an equal message or a copy gave the message in hand away")
	}
	if !h.Sending(m) {
		t.Fatal("sending the message in hand did not give it away")
	}
	if got := h.Text(); got != hidden {
		t.Errorf("given away: got %q, want %q", got, hidden)
	}
	if h.Sending(m) {
		t.Error("sending it again gave it away a second time")
	}
	h.SendFailed()
	if got := h.Text(); got != `{"n":1}` {
		t.Errorf("after the send failed: got %q, want the message", got)
	}
	h.Take(message.Message{"n": 2})
	if got := h.Text(); got != `{"n":2}` {
		t.Errorf("next message: got %q", got)
	}
}
