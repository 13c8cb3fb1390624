package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/multimodule/multimodule/host"
	"github.com/multimodule/multimodule/observe"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// httpListener is the daemon's HTTP listener (--http).
type httpListener struct {
	ln    net.Listener
	obs   *observe.Server
	srv   *http.Server
	close sync.Once
}

// ResolveHTTPAddr checks --http: a bare port ("7070" or ":7070") is on
// the loopback address; a non-loopback address needs a token.
func ResolveHTTPAddr(addr string, haveToken bool) (string, error) {
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--http %s: %w (want host:port or a port)", addr, err)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	loop := h == "localhost"
	if ip := net.ParseIP(h); ip != nil {
		loop = ip.IsLoopback()
	}
	if !loop && !haveToken {
		return "", fmt.Errorf("--http %s: %s is not a loopback address: give --http-token FILE too, so that only who has the token can act on tasks", addr, h)
	}
	return net.JoinHostPort(h, port), nil
}

// listenHTTP binds --http (before anything starts, so a bad address
// stops the daemon at once). Serving starts with serveHTTP.
func (m *mainRole) listenHTTP() error {
	d := m.d
	if d.opts.HTTP == "" {
		return nil
	}
	if d.opts.HTTPToken != "" {
		if _, err := readTokenFile(d.opts.HTTPToken); err != nil {
			return fmt.Errorf("--http-token: %w", err)
		}
	}
	addr, err := ResolveHTTPAddr(d.opts.HTTP, d.opts.HTTPToken != "")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	host, _, _ := net.SplitHostPort(addr)
	obs := observe.New(observe.Options{
		Source:         daemonSource{m},
		Token:          d.httpToken,
		ReadsNeedToken: d.opts.HTTPToken != "" && !isLoopback(host),
		// On a loopback address, no other name may reach it.
		LoopbackHostsOnly: isLoopback(host),
		Logger:            d.log.With("component", "http"),
	})
	m.http = &httpListener{ln: ln, obs: obs, srv: &http.Server{
		Handler:           obs.Handler(),
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}}
	return nil
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// serveHTTP starts the listener's sampling and writes <state>/http.json
// (store.HTTPFile); its actor serves (mainRole.addIntake).
func (m *mainRole) serveHTTP() {
	d, l := m.d, m.http
	if l == nil {
		return
	}
	l.obs.Start()
	addr := l.ln.Addr().String()
	info := store.HTTPInfo{Addr: addr, URL: "http://" + addr + "/", PID: os.Getpid()}
	if err := d.store.SaveHTTPInfo(info); err != nil {
		d.log.Error("http listener", "error", err)
	}
	d.log.Info("http listener ready", "url", info.URL)
}

// closeHTTP ends the event streams, stops the listener and removes
// <state>/http.json.
func (m *mainRole) closeHTTP() {
	d, l := m.d, m.http
	if l == nil {
		return
	}
	l.close.Do(func() {
		if err := d.store.RemoveHTTPInfo(); err != nil {
			d.log.Error("http listener", "error", err)
		}
		l.obs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil {
			_ = l.srv.Close()
		}
		_ = l.ln.Close()
	})
}

// noteAlert gives an alert-channel record to the HTTP listener.
func (m *mainRole) noteAlert(channel, taskName, text string, details map[string]any) {
	if m.http != nil && channel == "alert" {
		m.http.obs.Alert(observe.AlertFromRecord(time.Now(), taskName, text, details))
	}
}

// noteUnfailsafe tells the HTTP listener a task was unfailsafed.
func (m *mainRole) noteUnfailsafe(name string) {
	if m.http != nil {
		m.http.obs.Unfailsafed(name, time.Now())
	}
}

// httpToken is the token actions need: --http-token's file, else the
// embedded bus' token file.
func (d *Daemon) httpToken() string {
	path := d.opts.HTTPToken
	if path == "" {
		if d.opts.Transit.NATSURL != "" {
			return ""
		}
		dir := d.opts.Transit.TransportDir
		if dir == "" {
			dir = filepath.Join(d.opts.StateDir, "transit")
		}
		path = filepath.Join(dir, transit.BusTokenFile)
	}
	tok, _ := readTokenFile(path)
	return tok
}

func readTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

// daemonSource is the daemon as the HTTP listener's observe.Source.
type daemonSource struct{ m *mainRole }

func (s daemonSource) Failsafe(ctx context.Context, name, reason string) error {
	m := s.m
	err := m.failsafe(name, map[string]any{"summary": "failsafed by an operator: " + reason, "reason": reason}, "operator")
	m.saveReasons()
	return err
}

func (s daemonSource) Unfailsafe(ctx context.Context, name string) error {
	m := s.m
	err := m.unfailsafe(name)
	m.saveReasons()
	return err
}

// Snapshot gathers what `status` and `queues -a` print, from the same
// places (observe.CollectStatus), with the live levels of the monitor,
// each task's counters, and its own process' usage read now.
func (s daemonSource) Snapshot(ctx context.Context) (observe.Snapshot, error) {
	d := s.m.d
	snap := observe.Snapshot{Time: time.Now()}
	h := d.tr.Health()
	snap.Bus = observe.Bus{Connected: h.Connected, Reconnects: h.Reconnects}
	depth := map[string]int64{}
	if stats, err := d.tr.Stats(ctx, transit.QueueFilter{}); err != nil {
		snap.Bus.Error = err.Error()
	} else {
		for _, q := range stats {
			depth[q.Name] = q.Msgs
			snap.Queues = append(snap.Queues, observe.QueueOf(q.Name, q.Msgs, q.Bytes, q.Capacity.Msgs, q.Capacity.Bytes, q.Local))
			if q.Name == transit.DeadLetterQueue {
				snap.Bus.DeadLetters = q.Msgs
			}
		}
	}
	levels, all := store.Levels{}, store.Levels{}
	if l := s.m.mon.Levels(); l != nil {
		all = l
		for name, lvs := range all {
			lv := map[string]string{}
			for k, v := range lvs {
				if v != "" && v != "ok" {
					lv[k] = v
				}
			}
			levels[name] = lv
		}
	}
	reasons, _ := d.store.LoadReasons()
	tasks, err := observe.CollectStatus(d.store, depth, levels, reasons)
	if err != nil {
		return snap, err
	}
	hosted := map[string]host.TaskInfo{}
	for _, ti := range d.host.Tasks() {
		hosted[ti.Name] = ti
	}
	for i := range tasks {
		t := &tasks[i]
		if len(t.Alerts) == 0 {
			t.Alerts = nil
		}
		if lv := all[t.Task]; len(lv) > 0 {
			t.Levels = lv
		}
		cs := d.host.Counters().Task(t.Task)
		var pids []int
		if t.Place == observe.PlaceExternal {
			if st, _ := d.store.LoadStatus(t.Task); st != nil && t.Running {
				for k, v := range st.Counters {
					cs[k] += v
				}
				pids = append(pids, st.PID)
				if st.CoPID > 0 {
					pids = append(pids, st.CoPID)
				}
			}
		} else if ti, ok := hosted[t.Task]; ok {
			// The daemon hosts it: internal, also when it has no config
			// of its own (a task loaded for the messages sent to it).
			t.Running, t.Where = true, observe.PlaceInternal
			if ti.CoPID > 0 {
				t.Place = observe.PlaceExec
				pids = append(pids, ti.CoPID)
			}
		} else {
			// Not external and not hosted: its status file may name the
			// daemon, which runs, but the task does not.
			t.Running = false
		}
		t.Counters = observe.Counters{
			Handled:        cs[host.MetricPassedMessages],
			Emitted:        cs[host.MetricEmitMessages],
			Failed:         cs[host.MetricTaskMessageFailure],
			HandlerSeconds: float64(cs[host.MetricHandlerNanos]) / 1e9,
			Restarts:       cs[host.MetricStartExternal] + cs[host.MetricStartCoprocess],
			LoadFailures:   cs[host.MetricTaskCompileFailureInternal] + cs[host.MetricTaskCompileFailureExternal],
		}
		t.Counters.HandlerBuckets, t.Counters.HandlerCount = handlerBuckets(cs)
		for _, pid := range pids {
			u, err := procid.UsageOf(pid)
			if err != nil {
				continue
			}
			if t.Process == nil {
				t.Process = &observe.Process{}
			}
			p := t.Process
			p.CPUSeconds += u.CPUSeconds
			p.RSSBytes += u.RSSBytes
			p.FDs += u.FDs
			p.Threads += u.Threads
			p.ReadBytes += u.ReadBytes
			p.WriteBytes += u.WriteBytes
		}
	}
	snap.Tasks = s.m.place.status(ctx, tasks)
	return snap, nil
}

// handlerBuckets returns the cumulative handler latency buckets of a
// task's counters cs and their count with the overflow (nil, 0 when it has
// none).
func handlerBuckets(cs map[string]uint64) ([]observe.Bucket, uint64) {
	if _, ok := cs[host.HandlerBucketMetrics[0]]; !ok {
		return nil, 0
	}
	out := make([]observe.Bucket, len(host.HandlerBuckets))
	var n uint64
	for i, metric := range host.HandlerBucketMetrics {
		n += cs[metric]
		out[i] = observe.Bucket{LE: host.HandlerBuckets[i].Seconds(), Count: n}
	}
	return out, n + cs[host.MetricHandlerOverflow]
}
