package transit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/multimodule/multimodule/trust"
)

// BusOptions tune [RunBus].
type BusOptions struct {
	// IdleExit: the bus exits by itself once, for this long, no client
	// has been connected and it holds no message (every queue of every
	// host scope empty, the dead-letter queue included). 0: never.
	IdleExit time.Duration
	// Logger receives the bus' logs; nil means slog.Default().
	Logger *slog.Logger
}

// RunBus runs the embedded bus for transport directory dir in the
// foreground until ctx ends (`multimodule bus -T dir`): a nats-server with
// JetStream storing under dir/jetstream, listening on 127.0.0.1 on a
// random port, requiring a fresh random token. dir must be trusted
// (trust.Dir). Once the server is ready it
// writes dir/token (0600) and then dir/bus.json; on exit it removes
// bus.json. It refuses to run when another bus holds dir's lock, so two
// servers never share a store (it waits for the lock while the holder is
// stopping: bus.json gone, the lock still held).
//
// It also stops by itself: when dir (its lock file) is removed or
// replaced, when StopBus asks it to, and after opts.IdleExit without
// clients or messages.
func RunBus(ctx context.Context, dir string, opts BusOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	// A directory others can write is refused, not made private: what
	// they may have put in it stays.
	if err := trust.Dir("transport dir", dir); err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // nobody else reads it either
		return fmt.Errorf("transit: bus: %w", err)
	}
	lock, _, err := trust.OpenFile("lock file", filepath.Join(dir, busRunLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	defer lock.Close()
	if err := takeRunLock(ctx, dir, lock); err != nil {
		return err
	}

	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("transit: bus: token: %w", err)
	}
	token := hex.EncodeToString(raw[:])
	sopts := &server.Options{
		ServerName:            "multimodule-bus",
		Host:                  "127.0.0.1",
		Port:                  server.RANDOM_PORT,
		Authorization:         token,
		JetStream:             true,
		StoreDir:              filepath.Join(dir, busStoreDir),
		MaxPayload:            MaxMessageBytes + 64<<10,
		MaxPending:            256 << 20,
		NoSigs:                true,
		DisableShortFirstPing: true,
		// One durable consumer per queue: a daemon with more than the
		// server's default 1,000 tasks per host scope must not be refused.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
	}
	s, err := server.NewServer(sopts)
	if err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	s.SetLoggerV2(&serverLog{log: log.With("component", "bus")}, false, false, false)
	s.Start()
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	if !s.ReadyForConnections(30 * time.Second) {
		return errors.New("transit: bus: nats-server not ready after 30s")
	}
	if err := writeFileAtomic(filepath.Join(dir, BusTokenFile), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	st, err := processStartTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("transit: bus: own start time: %w", err)
	}
	bi := BusInfo{URL: s.ClientURL(), PID: os.Getpid(), StartTime: st}
	b, _ := json.Marshal(bi)
	if err := writeFileAtomic(filepath.Join(dir, BusInfoFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	log.Info("bus ready", "url", bi.URL, "pid", bi.PID, "dir", dir, "idle_exit", opts.IdleExit.String())
	stop := make(chan string, 1)
	ctl, err := serveStopRequests(s, token, stop)
	if err != nil {
		return fmt.Errorf("transit: bus: %w", err)
	}
	defer ctl.Close()
	go watchBus(ctx, s, dir, lock, opts.IdleExit, stop)
	select {
	case <-ctx.Done():
		log.Info("bus stopping", "dir", dir, "reason", context.Cause(ctx).Error())
	case why := <-stop:
		log.Info("bus stopping", "dir", dir, "reason", why)
	}
	if cur, err := ReadBusInfo(dir); err == nil && cur == bi {
		os.Remove(filepath.Join(dir, BusInfoFile))
	}
	return nil
}

// writeFileAtomic writes data to path via a temporary file, fsync and
// rename, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// serverLog adapts nats-server's logger to slog.
type serverLog struct{ log *slog.Logger }

func (l *serverLog) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Tracef(format string, v ...any)  {}
