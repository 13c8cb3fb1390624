package transit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The life of the embedded bus: how it ends. A bus runs detached, so
// nothing else would ever stop it; it stops
//   - when asked (StopBus: `multimodule bus stop`, `multimodule stop`,
//     a daemon that failed to start stopping the bus it started), unless
//     other clients still use it;
//   - when its transport directory is removed (rm -rf state): its store
//     is gone, and nothing would find it again;
//   - after BusOptions.IdleExit with no client connected and no message
//     stored.

// busStopSubject is the subject StopBus sends its request on; the bus
// itself answers it. It is outside the queues' subject space.
const busStopSubject = "_MM.bus.stop"

// stopRequest is StopBus' request; stopReply the bus' answer.
type stopRequest struct {
	Force bool `json:"force"`
}

type stopReply struct {
	Stopping bool `json:"stopping"`
	Others   int  `json:"others"` // other clients connected
}

// takeRunLock takes the bus' run lock on lock (dir/bus.lock). A lock held
// by a bus that bus.json names as live is refused at once; one held by a
// bus that is stopping (bus.json removed) is waited for, up to 30s.
func takeRunLock(ctx context.Context, dir string, lock *os.File) error {
	deadline := time.Now().Add(30 * time.Second)
	delay := 10 * time.Millisecond
	for {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("transit: bus: lock %s: %w", lock.Name(), err)
		}
		bi, berr := ReadBusInfo(dir)
		if berr == nil && bi.Alive() || time.Now().After(deadline) {
			return fmt.Errorf("transit: bus: another bus runs in %s (pid %d, %s): %w", dir, bi.PID, bi.URL, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("transit: bus: waiting for the previous bus in %s to stop: %w", dir, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// stopClientsGrace is how long a stop request waits for the bus' other
// clients to leave before it answers that the bus is in use.
const stopClientsGrace = time.Second

// serveStopRequests answers StopBus on an in-process connection: it
// stops (sends on stop) unless clients other than itself and the asker
// are connected and the request does not force it.
func serveStopRequests(s *server.Server, token string, stop chan<- string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.Token(token), nats.Name("multimodule bus control"))
	if err != nil {
		return nil, fmt.Errorf("control connection: %w", err)
	}
	_, err = nc.Subscribe(busStopSubject, func(m *nats.Msg) {
		var req stopRequest
		_ = json.Unmarshal(m.Data, &req)
		others := max(s.NumClients()-2, 0) // not this connection, not the asker
		// A client that closed its connection just before (a process
		// that started the bus, failed, closed its Transit and asks
		// the bus to stop) is counted until the server has seen the
		// close: give clients a moment to leave.
		for wait := time.Now().Add(stopClientsGrace); others > 0 && !req.Force && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
			others = max(s.NumClients()-2, 0)
		}
		rep := stopReply{Stopping: req.Force || others == 0, Others: others}
		b, _ := json.Marshal(rep)
		_ = m.Respond(b)
		if rep.Stopping {
			_ = nc.Flush()
			// The asker closes its connection once it has the answer:
			// stopping before that could close its connection with the
			// answer still on the way.
			for wait := time.Now().Add(stopClientsGrace); s.NumClients() > others+1 && time.Now().Before(wait); {
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case stop <- fmt.Sprintf("asked to stop (other clients: %d)", others):
			default:
			}
		}
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("control subscription: %w", err)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("control subscription: %w", err)
	}
	return nc, nil
}

// busCheckEvery is how often a bus looks at its directory and, with an
// idle exit, at its clients and messages.
const busCheckEvery = time.Second

// watchBus sends on stop when dir's lock file is no longer the one the
// bus holds (the directory was removed or replaced), or when the bus has
// had no client but its own control connection and no stored message for
// idle (0: never).
func watchBus(ctx context.Context, s *server.Server, dir string, lock *os.File, idle time.Duration, stop chan<- string) {
	every := busCheckEvery
	if idle > 0 {
		every = min(every, max(idle/10, 10*time.Millisecond))
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var idleSince time.Time
	send := func(why string) {
		select {
		case stop <- why:
		default:
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !sameFile(lock, filepath.Join(dir, busRunLock)) {
			send("its directory " + dir + " was removed")
			return
		}
		if idle <= 0 {
			continue
		}
		busy := s.NumClients() > 1 // the control connection is one
		if !busy {
			if js, err := s.Jsz(nil); err == nil && js.Messages > 0 {
				busy = true
			}
		}
		switch {
		case busy:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) >= idle:
			send(fmt.Sprintf("idle for %v: no client and no message", idle))
			return
		}
	}
}

// sameFile reports whether path still names the open file f.
func sameFile(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(fi, pi)
}

// StopBus asks the embedded bus of transport directory dir to stop and
// waits (bounded by ctx) until its process has exited. Unless force, a
// bus that other clients use (a daemon, an external task, a waiting
// recv) is left running and StopBus returns an error wrapping
// ErrBusInUse. With no bus running it returns an error wrapping ErrNoBus.
// It returns the pid of the stopped bus. The bus stores every message
// on disk before it exits; nothing is lost.
func StopBus(ctx context.Context, dir string, force bool) (int, error) {
	bi, ok, err := liveBus(dir)
	if err != nil {
		return 0, wrapUntrusted(err)
	}
	if !ok {
		return 0, fmt.Errorf("%w in %s", ErrNoBus, dir)
	}
	tok, err := readToken(dir)
	if err != nil {
		return 0, fmt.Errorf("transit: stop the bus in %s: %w", dir, err)
	}
	nc, err := nats.Connect(bi.URL, nats.Token(tok), nats.Name("multimodule bus stop"), nats.NoReconnect())
	if err != nil {
		return 0, fmt.Errorf("transit: stop the bus in %s: connect %s: %w", dir, bi.URL, err)
	}
	b, _ := json.Marshal(stopRequest{Force: force})
	m, err := nc.RequestWithContext(ctx, busStopSubject, b)
	nc.Close()
	switch {
	case errors.Is(err, nats.ErrConnectionClosed):
		// The bus closed the connection before its answer arrived:
		// it is stopping; its exit says so below.
	case err != nil:
		return 0, fmt.Errorf("transit: stop the bus in %s (pid %d): %w", dir, bi.PID, err)
	default:
		var rep stopReply
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			return 0, fmt.Errorf("transit: stop the bus in %s (pid %d): answer %q: %w", dir, bi.PID, m.Data, err)
		}
		if !rep.Stopping {
			return bi.PID, fmt.Errorf("%w: %d other client(s) connected to the bus in %s (pid %d)", ErrBusInUse, rep.Others, dir, bi.PID)
		}
	}
	delay := 10 * time.Millisecond
	for bi.Alive() {
		select {
		case <-ctx.Done():
			return bi.PID, fmt.Errorf("transit: the bus in %s (pid %d) did not exit: %w", dir, bi.PID, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	return bi.PID, nil
}
