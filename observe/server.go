package observe

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var webFiles embed.FS

// Options configure a Server.
type Options struct {
	Source Source
	// Token returns the token that actions (failsafe, unfailsafe) must
	// carry as "Authorization: Bearer <token>"; "" refuses every action.
	// It is asked at every request, so a token file may change.
	Token func() string
	// ReadsNeedToken makes every endpoint but the page itself need the
	// token too (a listener on a non-loopback address).
	ReadsNeedToken bool
	// LoopbackHostsOnly refuses a request whose Host header is not a
	// loopback address or "localhost" (a listener on a loopback address):
	// a web page whose own name was made to resolve to 127.0.0.1 (DNS
	// rebinding) cannot read the open endpoints.
	LoopbackHostsOnly bool
	// Alerts is how many alerts /api/v1/alerts keeps (default 200).
	Alerts int
	// Tick is how often an event stream sends a snapshot of the tasks
	// (default 2 s).
	Tick time.Duration
	// MaxAge is how long a snapshot is reused by every reader (scrapes,
	// API calls, event streams) before the Source is asked again (default
	// 1 s); an action makes the next read fresh.
	MaxAge time.Duration
	// HistoryStep is how often Start samples every task's handled
	// counter for its rate history (default 10 s); the history keeps
	// HistoryPoints rates.
	HistoryStep time.Duration
	Logger      *slog.Logger
}

// Server serves the metrics, the API, the events and the page.
type Server struct {
	opts Options
	log  *slog.Logger
	reg  *prometheus.Registry
	mux  *http.ServeMux

	snapMu  sync.Mutex // one snapshot at a time; guards the three below
	last    Snapshot
	lastAt  time.Time
	lastErr error
	stale   atomic.Bool // the last snapshot is not to be reused

	mu     sync.Mutex
	ring   []Alert // the last opts.Alerts alerts, oldest first
	subs   map[chan event]struct{}
	closed bool

	hist        *rateHistory
	stopHistory context.CancelFunc // ends Start's sampling
	wg          sync.WaitGroup     // Start's sampler
}

// event is one Server-Sent Event.
type event struct {
	name string
	data []byte
}

// New returns a Server reading opts.Source.
func New(opts Options) *Server {
	if opts.Alerts <= 0 {
		opts.Alerts = 200
	}
	if opts.Tick <= 0 {
		opts.Tick = 2 * time.Second
	}
	if opts.Token == nil {
		opts.Token = func() string { return "" }
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = time.Second
	}
	if opts.HistoryStep <= 0 {
		opts.HistoryStep = 10 * time.Second
	}
	s := &Server{opts: opts, log: opts.Logger, subs: map[chan event]struct{}{}, hist: newRateHistory(opts.HistoryStep)}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "multimodule"}),
		NewCollector(cached{s}, 0, s.log),
	)
	page, _ := fs.Sub(webFiles, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.reads(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{s.log}})))
	mux.Handle("GET /api/v1/tasks", s.reads(http.HandlerFunc(s.tasks)))
	mux.Handle("GET /api/v1/tasks/{name}", s.reads(http.HandlerFunc(s.task)))
	mux.Handle("GET /api/v1/queues", s.reads(http.HandlerFunc(s.queues)))
	mux.Handle("GET /api/v1/bus", s.reads(http.HandlerFunc(s.bus)))
	mux.Handle("GET /api/v1/alerts", s.reads(http.HandlerFunc(s.alerts)))
	mux.Handle("GET /api/v1/events", s.reads(http.HandlerFunc(s.events)))
	mux.HandleFunc("POST /api/v1/tasks/{name}/failsafe", s.action(true))
	mux.HandleFunc("POST /api/v1/tasks/{name}/unfailsafe", s.action(false))
	mux.Handle("GET /", http.FileServerFS(page))
	s.mux = mux
	return s
}

// cached is the Source with its snapshots reused for MaxAge: a
// dashboard left open, a scrape and an API call at once ask the daemon
// once.
type cached struct{ s *Server }

func (c cached) Snapshot(ctx context.Context) (Snapshot, error) {
	s := c.s
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if !s.stale.Load() && !s.lastAt.IsZero() && time.Since(s.lastAt) < s.opts.MaxAge {
		return s.last, s.lastErr
	}
	s.stale.Store(false) // a forget from now on is after this snapshot began
	snap, err := s.opts.Source.Snapshot(ctx)
	if ctx.Err() != nil && err != nil {
		return snap, err // this caller gave up; keep no error for the others
	}
	s.last, s.lastErr, s.lastAt = snap, err, time.Now()
	return snap, err
}

func (c cached) Failsafe(ctx context.Context, task, reason string) error {
	defer c.forget()
	return c.s.opts.Source.Failsafe(ctx, task, reason)
}

func (c cached) Unfailsafe(ctx context.Context, task string) error {
	defer c.forget()
	return c.s.opts.Source.Unfailsafe(ctx, task)
}

// forget makes the next snapshot fresh. It never waits (the daemon
// calls it from its alert path while a snapshot may be under way).
func (c cached) forget() { c.s.stale.Store(true) }

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.secure(s.mux) }

// Registry is the Prometheus registry /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Close ends every event stream and Start's sampling.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for ch := range s.subs {
		close(ch)
		delete(s.subs, ch)
	}
	stop := s.stopHistory
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.wg.Wait()
}

// Alert records an alert (kept for /api/v1/alerts) and sends it to every
// event stream; a monitor level change is also sent as a "level" event.
func (s *Server) Alert(a Alert) {
	cached{s}.forget() // what the alert is about shows at the next read
	s.mu.Lock()
	s.ring = append(s.ring, a)
	if over := len(s.ring) - s.opts.Alerts; over > 0 {
		s.ring = append(s.ring[:0], s.ring[over:]...)
	}
	s.mu.Unlock()
	s.broadcast("alert", a)
	if a.Metric != "" {
		s.broadcast("level", map[string]any{"task": a.Task, "metric": a.Metric, "window": a.Window, "level": a.Level, "previous_level": a.Previous, "time": a.Time})
	}
}

// Unfailsafed records that task was unfailsafed (an alert record with
// Unfailsafe set).
func (s *Server) Unfailsafed(task string, at time.Time) {
	s.Alert(Alert{Time: float64(at.UnixNano()) / 1e9, Task: task, Level: "ok", Unfailsafe: true,
		Text: fmt.Sprintf("task %s unfailsafed: starting it again", task)})
}

func (s *Server) broadcast(name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- event{name, data}:
		default: // a slow reader misses events; its next snapshot catches up
		}
	}
}

// secure sets the headers every response carries.
func (s *Server) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
		if s.opts.LoopbackHostsOnly && !loopbackHost(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf("host %q is not this loopback listener: use http://127.0.0.1:<port>/ or http://localhost:<port>/", r.Host))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether the Host header names a loopback address
// or localhost.
func loopbackHost(hostport string) bool {
	h := hostport
	if sh, _, err := net.SplitHostPort(hostport); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// authorized reports whether r carries the token.
func (s *Server) authorized(r *http.Request) (bool, string) {
	tok := s.opts.Token()
	if tok == "" {
		return false, "no token is configured (give the daemon --http-token FILE; the bus token works with the embedded bus)"
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false, `the request needs the header "Authorization: Bearer <token>"`
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(tok)) != 1 {
		return false, "wrong token"
	}
	return true, ""
}

// reads guards a read endpoint: open unless ReadsNeedToken.
func (s *Server) reads(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.ReadsNeedToken {
			if ok, why := s.authorized(r); !ok {
				writeError(w, http.StatusUnauthorized, why)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin refuses a request sent by a page of another origin: its
// Origin header, when present, must name this very host.
func sameOrigin(r *http.Request) error {
	o := r.Header.Get("Origin")
	if o == "" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || u.Host != r.Host {
		return fmt.Errorf("origin %q is not this server (%s)", o, r.Host)
	}
	return nil
}

// action is failsafe (on) or unfailsafe. It needs the token in the
// Authorization header (which no form nor cross-site page can send
// without a preflight that is never granted), refuses form bodies, and
// refuses another Origin.
func (s *Server) action(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, _ := mime.ParseMediaType(ct)
			if mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, "the body must be application/json (form posts are refused)")
				return
			}
		}
		if ok, why := s.authorized(r); !ok {
			writeError(w, http.StatusUnauthorized, why)
			return
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 {
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
			if err := dec.Decode(&body); err != nil {
				writeError(w, http.StatusBadRequest, "the body must be a JSON object like {\"reason\": \"...\"}: "+err.Error())
				return
			}
		}
		name := r.PathValue("name")
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		var err error
		verb := "failsafed"
		if on {
			reason := body.Reason
			if reason == "" {
				reason = "from the web API"
			}
			err = cached{s}.Failsafe(ctx, name, reason)
		} else {
			verb = "unfailsafed"
			err = cached{s}.Unfailsafe(ctx, name)
		}
		if err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		s.log.Info("http: "+verb, "task", name, "remote", r.RemoteAddr)
		writeJSON(w, map[string]any{"task": name, "result": verb})
	}
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) (Snapshot, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	snap, err := cached{s}.Snapshot(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return snap, false
	}
	return snap, true
}

func (s *Server) tasks(w http.ResponseWriter, r *http.Request) {
	if snap, ok := s.snapshot(w, r); ok {
		writeJSON(w, nonNil(s.withHistory(snap).Tasks))
	}
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	snap, ok := s.snapshot(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	for _, t := range snap.Tasks {
		if t.Task == name {
			t.RateHistory = s.hist.of(name)
			writeJSON(w, t)
			return
		}
	}
	writeError(w, http.StatusNotFound, "no task "+name)
}

func (s *Server) queues(w http.ResponseWriter, r *http.Request) {
	if snap, ok := s.snapshot(w, r); ok {
		writeJSON(w, nonNil(snap.Queues))
	}
}

func (s *Server) bus(w http.ResponseWriter, r *http.Request) {
	if snap, ok := s.snapshot(w, r); ok {
		writeJSON(w, snap.Bus)
	}
}

func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := append([]Alert{}, s.ring...)
	s.mu.Unlock()
	writeJSON(w, out)
}

// events streams Server-Sent Events: "snapshot" (the tasks, queues and
// bus) at once and every Tick, "alert" and "level" as they happen.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported")
		return
	}
	ch := make(chan event, 64)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(name string, data []byte) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	snap := func() bool {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		sn, err := cached{s}.Snapshot(ctx)
		if err != nil {
			data, _ := json.Marshal(map[string]string{"error": err.Error()})
			return send("error", data)
		}
		sn = s.withHistory(sn)
		sn.Tasks, sn.Queues = nonNil(sn.Tasks), nonNil(sn.Queues)
		data, err := json.Marshal(sn)
		if err != nil {
			return false
		}
		return send("snapshot", data)
	}
	if !snap() {
		return
	}
	tick := time.NewTicker(s.opts.Tick)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !snap() {
				return
			}
		case ev, ok := <-ch:
			if !ok || !send(ev.name, ev.data) {
				return
			}
		}
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// slogPrinter adapts promhttp's error log to slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics: " + fmt.Sprintln(v...)) }
