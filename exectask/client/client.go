// Package client lets a Go program be an exec task: build it, drop the
// binary in a -p directory, and the daemon runs it as a co-process over
// the line protocol (docs/exec-protocol.md). Use it when a task needs its
// own binary (another Go version, cgo, a licence boundary); tasks compiled
// into the daemon are simpler and faster (package task).
//
//	func main() {
//		err := client.Run(client.Task{
//			Stateful: true,
//			Message: func(c *client.Conn, msg message.Message) error {
//				n, _ := message.Int(c.State()["ct"])
//				c.State()["ct"] = n + 1
//				msg["ct"] = n + 1
//				return c.Emit(msg)
//			},
//		})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//	}
package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/multimodule/multimodule/message"
)

// Protocols are the protocol versions this package speaks. With 2 the
// host may write several requests before the first is acked; Serve
// handles what has arrived, in order, and writes the answers together.
var Protocols = []int64{1, 2}

// flushEvery: during a burst of requests, answers are written at least
// this often, so that the host sees each ack well within its timeout.
const flushEvery = 50 * time.Millisecond

// Task is what a Go exec task does. Message is required.
type Task struct {
	// Stateful declares that the task keeps state across restarts.
	Stateful bool
	// Message is called once per message.
	Message func(c *Conn, msg message.Message) error
	// SetConfig is called with the config at start and on every change;
	// an error rejects the new config (the previous one stays). Optional.
	SetConfig func(c *Conn, config map[string]any) error
}

// Conn is the task's view of its host while it handles a request. What it
// writes is sent with the request's acknowledgement, in one write.
type Conn struct {
	name, process string
	protocol      int64
	config        map[string]any
	state         map[string]any
	recurs        map[string]func(*Conn) error
	w             *bufio.Writer
}

// Name is the task's name.
func (c *Conn) Name() string { return c.name }

// Process is "main" (the daemon hosts the task) or the task whose
// external process does.
func (c *Conn) Process() string { return c.process }

// Config is the current config (do not modify it).
func (c *Conn) Config() map[string]any { return c.config }

// State is the state map of a stateful task; changes are sent to the host
// after each request.
func (c *Conn) State() map[string]any { return c.state }

// SetState replaces the state map.
func (c *Conn) SetState(s map[string]any) {
	if s == nil {
		s = map[string]any{}
	}
	c.state = s
}

// Emit sends msg to the Router.
func (c *Conn) Emit(msg message.Message) error {
	return c.write(map[string]any{"type": "emit", "message": map[string]any(msg)})
}

// Send sends msg straight to queue (on host destination, if not empty).
func (c *Conn) Send(queue, destination string, msg message.Message) error {
	rec := map[string]any{"type": "send", "queue": queue, "message": map[string]any(msg)}
	if destination != "" {
		rec["destination"] = destination
	}
	return c.write(rec)
}

// Out writes text to an out-of-band channel (log, debug, alert, error, …).
func (c *Conn) Out(channel, text string, details map[string]any) {
	rec := map[string]any{"type": "out", "channel": channel, "text": text}
	if len(details) > 0 {
		rec["details"] = details
	}
	_ = c.write(rec)
}

// Log writes text to the log channel.
func (c *Conn) Log(text string) { c.Out("log", text, nil) }

// Error writes text to the error channel.
func (c *Conn) Error(text string) { c.Out("error", text, nil) }

// Recur runs f every interval (the config's intervals.<name> overrides
// it); one schedule per name, however often it is called.
func (c *Conn) Recur(name string, interval time.Duration, f func(*Conn) error) {
	c.recurs[name] = f
	_ = c.write(map[string]any{"type": "recur", "name": name, "interval": interval.Seconds()})
}

// DelRecurs cancels every schedule of the task.
func (c *Conn) DelRecurs() {
	clear(c.recurs)
	_ = c.write(map[string]any{"type": "del_recurs"})
}

func (c *Conn) write(rec map[string]any) error {
	b, err := message.Marshal(rec)
	if err != nil {
		return fmt.Errorf("client: %v: %w", rec["type"], err)
	}
	c.w.Write(b)
	return c.w.WriteByte('\n')
}

// Run speaks the protocol on stdin and stdout until stdin ends. The name
// comes from MULTIMODULE_TASK (or the program's file name).
func Run(t Task) error {
	name := os.Getenv("MULTIMODULE_TASK")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	if os.Getenv("MULTIMODULE_MODE") == "describe" {
		return hello(os.Stdout, name, t.Stateful)
	}
	return Serve(os.Stdin, os.Stdout, name, t)
}

func hello(w io.Writer, name string, stateful bool) error {
	b, _ := json.Marshal(map[string]any{"type": "hello", "name": name, "protocol": Protocols, "stateful": stateful})
	_, err := w.Write(append(b, '\n'))
	return err
}

// Serve speaks the protocol on r and w as task name until r ends.
func Serve(r io.Reader, w io.Writer, name string, t Task) error {
	if t.Message == nil {
		return errors.New("client: Task.Message is required")
	}
	if err := hello(w, name, t.Stateful); err != nil {
		return fmt.Errorf("client: hello: %w", err)
	}
	c := &Conn{name: name, config: map[string]any{}, state: map[string]any{},
		recurs: map[string]func(*Conn) error{}, w: bufio.NewWriterSize(w, 64<<10)}
	var synced []byte
	in := bufio.NewReaderSize(r, 64<<10)
	var burst time.Time // when the requests being handled were read
	for {
		// Answers wait in c.w while more requests are already here (a
		// burst of protocol 2), and are written before the next wait.
		wait := !lineBuffered(in)
		if c.w.Buffered() > 0 && (wait || time.Since(burst) > flushEvery) {
			if err := c.w.Flush(); err != nil {
				return fmt.Errorf("client: write: %w", err)
			}
			burst = time.Now()
		}
		line, err := in.ReadBytes('\n')
		if wait {
			burst = time.Now()
		}
		if len(bytes.TrimSpace(line)) == 0 {
			if err == io.EOF {
				return c.w.Flush()
			}
			if err != nil {
				return fmt.Errorf("client: read: %w", err)
			}
			continue
		}
		req, perr := message.Unmarshal(line)
		if perr != nil {
			fmt.Fprintf(os.Stderr, "client: unreadable line from the host: %v\n", perr)
			continue
		}
		typ, _ := req["type"].(string)
		id, hasID := req["id"].(int64)
		var herr error
		switch typ {
		case "welcome":
			c.protocol, _ = req["protocol"].(int64)
			c.process, _ = req["process"].(string)
			continue
		case "error":
			return fmt.Errorf("client: the host refused us: %v", req["text"])
		case "state":
			st, _ := req["state"].(map[string]any)
			c.SetState(st)
			synced, _ = message.Marshal(c.state)
		case "config":
			cfg, _ := req["config"].(map[string]any)
			if cfg == nil {
				cfg = map[string]any{}
			}
			if t.SetConfig != nil {
				herr = safe(func() error { return t.SetConfig(c, cfg) })
			}
			if herr == nil {
				c.config = cfg
			}
		case "message":
			msg, _ := req["message"].(map[string]any)
			herr = safe(func() error { return t.Message(c, msg) })
		case "tick":
			name, _ := req["name"].(string)
			if f := c.recurs[name]; f != nil {
				herr = safe(func() error { return f(c) })
			}
		default:
			herr = fmt.Errorf("client: unknown request type %q", typ)
		}
		if t.Stateful && typ != "state" {
			if now, err := message.Marshal(c.state); err == nil && !bytes.Equal(now, synced) {
				synced = now
				_ = c.write(map[string]any{"type": "state", "state": c.state})
			} else if err != nil && herr == nil {
				herr = fmt.Errorf("client: state is not JSON-compatible: %w", err)
			}
		}
		if !hasID {
			continue
		}
		if herr != nil {
			_ = c.write(map[string]any{"type": "ack", "id": id, "error": herr.Error()})
		} else {
			// The plain ack, in the exact form the host reads fastest.
			fmt.Fprintf(c.w, "{\"type\":\"ack\",\"id\":%d}\n", id)
		}
	}
}

// lineBuffered reports whether a whole line is already read into in.
func lineBuffered(in *bufio.Reader) bool {
	b, _ := in.Peek(in.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// safe runs a handler, turning a panic into an error.
func safe(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}
