package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/multimodule/multimodule/internal/configfile"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

type sendOptions struct {
	queue       string
	text        string // the message text, or "-" for stdin
	lines       bool
	destination string
	nonBlock    bool
	timeout     time.Duration
}

func newSendCommand(g *Globals) *cobra.Command {
	o := &sendOptions{}
	cmd := &cobra.Command{
		Use:   "send QUEUE MESSAGE|-",
		Short: "Send a message to a queue",
		Long: `send puts a message on queue QUEUE of the bus (the embedded one under the
transport directory, started if needed, or --nats). MESSAGE is a JSON
object or a YAML mapping; "-" reads it from standard input. With --lines,
every non-empty line is one message (JSON, or YAML flow style). The command
returns once the bus stored every message.

A message must be a map at the top level; anything else is refused.
--destination HOST delivers to the same queue of another host scope.`,
		Example: `  multimodule send Example1 '{"new_ct": 999}'
  multimodule send Example1 'new_ct: 999'
  echo '{"a":1}' | multimodule send -s ./state MyQueue -
  multimodule send --lines MyQueue - < messages.jsonl
  multimodule send --destination box2 MyQueue '{"x":"y"}'`,
		Args: sendArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.queue, o.text = args[0], args[1]
			return runSend(cmd.Context(), g, o, cmd.InOrStdin())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.lines, "lines", false, "one message per line")
	f.StringVar(&o.destination, "destination", "", "deliver to this host scope instead of this box's")
	f.BoolVar(&o.nonBlock, "nonblock", false, "fail at once when the queue is full instead of waiting")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long (waiting for the bus or for room)")
	return cmd
}

// sendArgs says which of QUEUE and MESSAGE is missing.
func sendArgs(cmd *cobra.Command, args []string) error {
	switch len(args) {
	case 0:
		return errors.New(`send: no queue and no message: give both, as in multimodule send QUEUE '{"key":"value"}' (or - to read the message from standard input)`)
	case 1:
		return fmt.Errorf(`send: no message for queue %q: give it after the queue name, as in multimodule send %s '{"key":"value"}' (or - to read it from standard input)`, args[0], args[0])
	case 2:
		return nil
	}
	return fmt.Errorf("send: %d arguments, want QUEUE and MESSAGE (quote the message so that the shell passes it as one argument)", len(args))
}

func runSend(ctx context.Context, g *Globals, o *sendOptions, stdin io.Reader) error {
	if err := transit.ValidateQueueName(o.queue); err != nil {
		return err
	}
	text := []byte(o.text)
	if o.text == "-" {
		var err error
		if text, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("send: read standard input: %w", err)
		}
	}
	msgs, err := parseMessages(text, o.lines)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	ctx, t, done, err := openFor(ctx, g, o.timeout, openTransit)
	if err != nil {
		return err
	}
	defer done()
	opts := transit.SendOptions{Destination: o.destination, NonBlocking: o.nonBlock}
	if len(msgs) == 1 {
		return t.Send(ctx, o.queue, msgs[0], opts)
	}
	for i, m := range msgs {
		if err := t.SendAsync(ctx, o.queue, m, opts); err != nil {
			return fmt.Errorf("send: message %d: %w", i+1, err)
		}
	}
	return t.Flush(ctx)
}

// parseMessages reads one message (JSON or YAML), or with lines one per
// non-empty line.
func parseMessages(text []byte, lines bool) ([]message.Message, error) {
	if !lines {
		m, err := parseMessage(text)
		if err != nil {
			return nil, err
		}
		return []message.Message{m}, nil
	}
	var out []message.Message
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), transit.MaxMessageBytes+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		m, err := parseMessage(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no message in the input")
	}
	return out, nil
}

// parseMessage reads a JSON object (integers kept exact) or else a YAML
// mapping.
func parseMessage(text []byte) (message.Message, error) {
	trimmed := bytes.TrimSpace(text)
	if len(trimmed) == 0 {
		return nil, errors.New("empty message: give a JSON object or a YAML mapping")
	}
	m, jerr := message.Unmarshal(trimmed)
	if jerr == nil {
		return m, nil
	}
	if errors.Is(jerr, message.ErrNotMap) {
		return nil, fmt.Errorf("a message must be a map (JSON object): %w", jerr)
	}
	var v any
	if yerr := configfile.UnmarshalYAML(trimmed, &v); yerr != nil {
		if errors.Is(yerr, configfile.ErrTooLarge) {
			return nil, yerr // an alias bomb, or nesting too deep
		}
		if trimmed[0] == '{' || trimmed[0] == '[' {
			return nil, fmt.Errorf("not valid JSON: %w", jerr)
		}
		return nil, fmt.Errorf("neither JSON nor YAML: %s", strings.TrimSpace(yerr.Error()))
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("a message must be a map (JSON object or YAML mapping), got %s", describeValue(v))
	}
	return message.Normalize(v)
}

func describeValue(v any) string {
	switch v.(type) {
	case nil:
		return "nothing (null)"
	case string:
		return "a string"
	case []any:
		return "a list"
	case bool:
		return "a bool"
	}
	return fmt.Sprintf("a %T", v)
}
