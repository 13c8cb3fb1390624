package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"github.com/multimodule/multimodule/internal/daemon"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/procid"
	"github.com/multimodule/multimodule/store"
	"github.com/multimodule/multimodule/transit"
)

// env is one scenario's world: a temporary state directory, the daemon
// hosted in this process, a bus client, and the reports of the bench
// tasks.
type env struct {
	opts     *Options
	log      *slog.Logger
	name     string
	dir      string // temporary root, removed at close
	state    string
	exe      string
	errFile  string
	stopD    context.CancelCauseFunc
	daemonCh chan error
	tr       *transit.Transit
	reports  *reports
	stopRep  context.CancelFunc
	repDone  chan struct{}
	procs    *procSet
	children []*os.Process // processes the scenario started itself
	mu       sync.Mutex
}

// exitWithExternals makes the in-process daemon exit as on Ctrl-C: its
// externals are stopped too.
type exitWithExternals struct{}

func (exitWithExternals) Error() string          { return "bench scenario finished" }
func (exitWithExternals) SignalValue() os.Signal { return os.Interrupt }

func newEnv(ctx context.Context, name string, opts *Options) (e *env, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program (externals and the bus run it): %w", err)
	}
	dir, err := os.MkdirTemp("", "multimodule-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	e = &env{
		opts: opts, log: opts.Logger, name: name, dir: dir,
		state: filepath.Join(dir, "state"), exe: exe,
		errFile: filepath.Join(dir, "error.log"),
		procs:   newProcSet(),
	}
	defer func() {
		if err != nil {
			_ = e.close()
		}
	}()
	logOut, err := os.Create(filepath.Join(dir, "daemon.out"))
	if err != nil {
		return e, err
	}
	oobSpec := fmt.Sprintf("log:%s,error:%s,alert:%s,debug:%s",
		filepath.Join(dir, "log.log"), e.errFile, e.errFile, filepath.Join(dir, "debug.out"))
	if name == "scale" {
		// Its thousands of tasks, here and in the externals the daemon
		// starts; no other scenario's processes pay for them.
		benchtasks.RegisterScale()
	}
	sources := []string{benchtasks.Namespace}
	if name == "exec" {
		sources = append(sources, opts.ExecDir)
	}
	argv := []string{exe, "-s", e.state}
	for _, src := range sources {
		argv = append(argv, "-p", src)
	}
	var httpAddr string
	if opts.ScrapeMetrics > 0 {
		httpAddr = "127.0.0.1:0"
	}
	dctx, stop := context.WithCancelCause(context.Background())
	e.stopD = stop
	e.daemonCh = make(chan error, 1)
	go func() {
		defer logOut.Close()
		e.daemonCh <- daemon.Run(dctx, daemon.Options{
			StateDir:     e.state,
			Sources:      sources,
			OOB:          oobSpec,
			Stdout:       logOut,
			Stderr:       logOut,
			ExternalArgv: argv,
			HTTP:         httpAddr,
		})
	}()
	// Ready when the daemon wrote main.status naming this process.
	if err := poll(ctx, 60*time.Second, func() error {
		select {
		case err := <-e.daemonCh:
			e.daemonCh <- err
			return fmt.Errorf("daemon exited early: %v", err)
		default:
		}
		st, err := store.Open(e.state)
		if err != nil {
			return err
		}
		s, err := st.LoadStatus("main")
		if err != nil || s == nil || s.PID != os.Getpid() {
			return fmt.Errorf("daemon not ready (main.status: %v)", err)
		}
		return nil
	}); err != nil {
		return e, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	e.tr, err = transit.Open(ctx, transit.Options{StateDir: e.state, Logger: quiet})
	if err != nil {
		return e, fmt.Errorf("bench client: %w", err)
	}
	rctx, rstop := context.WithCancel(context.Background())
	cons, err := e.tr.Consume(rctx, benchtasks.ReportQueue)
	if err != nil {
		rstop()
		return e, fmt.Errorf("consume %s: %w", benchtasks.ReportQueue, err)
	}
	e.stopRep = rstop
	e.reports = newReports()
	e.repDone = make(chan struct{})
	go func() {
		defer close(e.repDone)
		defer cons.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case d, ok := <-cons.C():
				if !ok {
					return
				}
				e.reports.add(d.Msg)
				_ = d.Ack()
			}
		}
	}()
	e.procs.add("daemon+bench", os.Getpid())
	if bi, err := transit.ReadBusInfo(filepath.Join(e.state, "transit")); err == nil {
		e.procs.add("bus", bi.PID)
	}
	return e, nil
}

// configure sends a config (task → config) to the daemon's control queue.
func (e *env) configure(ctx context.Context, cfg map[string]any) error {
	return e.tr.Send(ctx, daemon.DefaultControlQueue, message.Message{".multimodule": map[string]any{"config": cfg}}, transit.SendOptions{})
}

// close stops the daemon (with its externals), the bus and every process
// the scenario started, and removes the temporary directory.
func (e *env) close() error {
	var errs []error
	if e.stopRep != nil {
		e.stopRep()
		<-e.repDone
	}
	if e.stopD != nil {
		e.stopD(exitWithExternals{})
		select {
		case err := <-e.daemonCh:
			if err != nil {
				errs = append(errs, fmt.Errorf("daemon: %w", err))
			}
		case <-time.After(90 * time.Second):
			errs = append(errs, errors.New("daemon did not exit within 90 s"))
		}
	}
	if e.tr != nil {
		_ = e.tr.Close()
	}
	e.mu.Lock()
	for _, p := range e.children {
		_ = p.Kill()
		_, _ = p.Wait()
	}
	e.mu.Unlock()
	// Externals and the bus are not our children: find them through the
	// state directory.
	if st, err := store.Open(e.state); err == nil {
		if names, err := st.Tasks(); err == nil {
			for _, name := range names {
				if s, err := st.LoadStatus(name); err == nil && s != nil && s.External {
					stopIdentity(s.Identity())
				}
			}
		}
	}
	if bi, err := transit.ReadBusInfo(filepath.Join(e.state, "transit")); err == nil {
		stopIdentity(procid.Identity{PID: bi.PID, StartTime: bi.StartTime})
	}
	if e.opts.Keep {
		fmt.Fprintf(os.Stderr, "bench: kept %s\n", e.dir)
	} else if err := os.RemoveAll(e.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopIdentity stops a process that is not our child: SIGTERM, then
// SIGKILL after a grace period.
func stopIdentity(id procid.Identity) {
	if id.PID <= 0 || id.PID == os.Getpid() || !id.Alive() {
		return
	}
	_ = syscall.Kill(id.PID, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for id.Alive() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling a non-child's exit; the deadline bounds it
	}
	if id.Alive() {
		_ = syscall.Kill(id.PID, syscall.SIGKILL)
	}
}

// errorCount is the number of records on the error and alert channels.
func (e *env) errorCount() int { return len(e.errorLines()) }

func (e *env) errorSample() []string {
	lines := e.errorLines()
	if len(lines) > 3 {
		lines = lines[:3]
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "…"
		}
	}
	return lines
}

func (e *env) errorLines() []string {
	f, err := os.Open(e.errFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// externalPID returns the pid of task's running external process (from
// its status file), or 0.
func (e *env) externalPID(task string) int {
	st, err := store.Open(e.state)
	if err != nil {
		return 0
	}
	s, err := st.LoadStatus(task)
	if err != nil || s == nil || !s.External || !s.Identity().Alive() {
		return 0
	}
	return s.PID
}

// poll calls f until it returns nil, ctx ends or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
