package transit_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// TestDestinationHostChecked: a send's destination must be a valid host
// name (refused, with the reason, not rewritten into another one), and
// its host scope must exist on the bus: a send creates no stream for a
// host nobody opened the bus as. A host with dots in its name is
// reached under the name it opened the bus with.
func TestDestinationHostChecked(t *testing.T) {
	dir := busDir(t)
	tr := open(t, dir, transit.Options{})
	ctx := ctxT(t, 60*time.Second)
	for _, dest := range []string{"../../x", "a b", "box.", ".box", "a..b", "x*", "host>", strings.Repeat("h", 65)} {
		err := tr.Send(ctx, "Q", message.Message{"x": 1}, transit.SendOptions{Destination: dest})
		if err == nil || !strings.Contains(err.Error(), "invalid host name") {
			t.Errorf("send to host %q: got %v, want an invalid host name error", dest, err)
		}
	}
	for _, send := range []func(context.Context, string, message.Message, transit.SendOptions) error{tr.Send, tr.SendAsync} {
		err := send(ctx, "Q", message.Message{"x": 1}, transit.SendOptions{Destination: "nobox"})
		if !errors.Is(err, transit.ErrUnknownHost) || !strings.Contains(err.Error(), `"nobox"`) {
			t.Errorf("send to a host without a scope: got %v, want ErrUnknownHost naming it", err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		t.Errorf("Flush: %v", err)
	}
	dotted := open(t, dir, transit.Options{Host: "box2.example.com"})
	if err := tr.Send(ctx, "Q", message.Message{"to": "box2"}, transit.SendOptions{Destination: "box2.example.com"}); err != nil {
		t.Fatalf("send to an open host: %v", err)
	}
	if m, err := dotted.TryReceive(ctx, "Q"); err != nil || m["to"] != "box2" {
		t.Errorf("the dotted host received %v, %v; want the message", m, err)
	}
	var names []string
	for n := range rawJS(t, dir).StreamNames(ctx).Name() {
		names = append(names, n)
	}
	if got := strings.Join(names, " "); got != "MM_box2_example_com MM_testhost" && got != "MM_testhost MM_box2_example_com" {
		t.Errorf("streams on the bus: %s; want only those of the two hosts that opened it", got)
	}
	for _, host := range []string{"../x", "a b"} {
		_, err := transit.Open(ctx, transit.Options{TransportDir: dir, Host: host})
		if err == nil || !strings.Contains(err.Error(), "invalid host name") {
			t.Errorf("Open with host %q: got %v, want an invalid host name error", host, err)
		}
	}
}
