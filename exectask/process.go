package exectask

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables the host gives a co-process (besides PATH, HOME
// and LANG, copied from the host's own environment when set).
const (
	EnvTask      = "MULTIMODULE_TASK"      // the task's name
	EnvTaskDir   = "MULTIMODULE_TASK_DIR"  // the directory the executable is in (also its working directory)
	EnvProcess   = "MULTIMODULE_PROCESS"   // "main" (the daemon) or the task whose external process hosts it
	EnvMode      = "MULTIMODULE_MODE"      // "run", or "describe" when only the handshake is wanted
	EnvProtocol  = "MULTIMODULE_PROTOCOL"  // the newest protocol version the host speaks
	EnvProtocols = "MULTIMODULE_PROTOCOLS" // every version the host speaks, comma-separated
)

// Modes in EnvMode.
const (
	ModeRun      = "run"
	ModeDescribe = "describe"
)

// defaultPath is PATH for a co-process when the host has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// environ is the whole environment of a co-process: minimal on purpose
// (no secrets of the daemon leak into task code).
func environ(name, dir, process, mode string) []string {
	env := make([]string, 0, 9)
	for _, k := range []string{"PATH", "HOME", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		} else if k == "PATH" {
			env = append(env, "PATH="+defaultPath)
		}
	}
	vs := make([]string, len(SupportedVersions))
	for i, v := range SupportedVersions {
		vs[i] = strconv.FormatInt(v, 10)
	}
	return append(env,
		EnvTask+"="+name,
		EnvTaskDir+"="+dir,
		EnvProcess+"="+process,
		EnvMode+"="+mode,
		EnvProtocol+"="+strconv.Itoa(ProtocolVersion),
		EnvProtocols+"="+strings.Join(vs, ","),
	)
}

// coproc is one running co-process: its pipes, a goroutine copying its
// stderr to the log, and one waiting for it to exit. Its stdout is read
// by whoever talks to it (the task's goroutine), with read deadlines, so
// an answer costs no goroutine hand-over.
type coproc struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	started time.Time
	stdin   *os.File
	stdout  *os.File
	out     *bufio.Reader
	long    []byte        // a line longer than the reader's buffer, being assembled
	pipeCap int           // bytes the stdin pipe holds
	exited  chan struct{} // closed once the process was reaped
	waitErr error         // valid after exited

	mu         sync.Mutex
	stderrTail []string // the last few stderr lines, for crash reports
	stopOnce   sync.Once
}

// procSpec says how to start a co-process.
type procSpec struct {
	name, path, dir, process, mode string
	log                            *slog.Logger
}

// startProc starts the executable with pipes. The co-process gets its own
// process group (so a shell task's children go with it) and is killed if
// the thread that started it dies with the host.
func startProc(spec procSpec) (*coproc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := exec.Command(spec.path)
	cmd.Dir = spec.dir
	cmd.Env = environ(spec.name, spec.dir, spec.process, spec.mode)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	// The child holds its own copies of these ends.
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", spec.path, err)
	}
	p := &coproc{
		name:    spec.name,
		cmd:     cmd,
		pid:     cmd.Process.Pid,
		started: time.Now(),
		stdin:   inW,
		stdout:  outR,
		out:     bufio.NewReaderSize(outR, 64<<10),
		exited:  make(chan struct{}),
		pipeCap: pipeCapacity(inW),
	}
	log := spec.log
	if log == nil {
		log = slog.Default()
	}
	stderrDone := make(chan struct{})
	go p.readStderr(errR, log, stderrDone)
	go func() {
		p.waitErr = cmd.Wait()
		// Whatever the task left behind in its group goes with it, so
		// that its pipes close.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		// A descendant that left the group may hold stderr open: do not
		// wait for it forever.
		select {
		case <-stderrDone:
		case <-time.After(time.Second):
		}
		close(p.exited)
	}()
	return p, nil
}

// readStderr copies every stderr line to the log channel.
func (p *coproc) readStderr(r *os.File, log *slog.Logger, done chan<- struct{}) {
	defer close(done)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		p.mu.Lock()
		p.stderrTail = append(p.stderrTail, text)
		if len(p.stderrTail) > 5 {
			p.stderrTail = p.stderrTail[1:]
		}
		p.mu.Unlock()
		log.Info(text, "stream", "stderr", "pid", p.pid)
	}
	// An unreadable rest (a giant line) is dropped; the task keeps going.
	_, _ = io.Copy(io.Discard, r)
}

// tail returns the last stderr lines, joined.
func (p *coproc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderrTail, "\n")
}

// dead reports whether the process has exited.
func (p *coproc) dead() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitText says how the process ended ("exit status 3", "signal: killed").
func (p *coproc) exitText() string {
	<-p.exited
	if p.waitErr == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ProcessState.String()
	}
	return p.waitErr.Error()
}

// exitStatus says how the process ended in the words of dead-letter
// records ("exit status 2", "killed by signal 9").
func (p *coproc) exitStatus() string {
	<-p.exited
	if p.waitErr == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("killed by signal %d", int(ws.Signal()))
		}
		return fmt.Sprintf("exit status %d", ee.ExitCode())
	}
	return p.waitErr.Error()
}

// errExited is wrapped when the co-process went away.
var errExited = errors.New("the co-process exited")

// exitError describes the end of the process, waiting briefly for it to
// be reaped.
func (p *coproc) exitError(when string) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%w (%s) %s", errExited, p.exitText(), when)
	case <-time.After(2 * time.Second):
		return fmt.Errorf("%w: it closed its stdout %s", errExited, when)
	}
}

// readLine reads one line (without its newline) from stdout, up to the
// deadline set on it. The slice is valid until the next read.
func (p *coproc) readLine() ([]byte, error) {
	p.long = p.long[:0]
	for {
		b, err := p.out.ReadSlice('\n')
		switch {
		case err == nil:
			b = b[:len(b)-1]
			if len(p.long) > 0 {
				p.long = append(p.long, b...)
				b = p.long
			}
			return b, nil
		case errors.Is(err, bufio.ErrBufferFull):
			if len(p.long)+len(b) > MaxLine {
				return nil, &ProtocolError{Line: bytes.Clone(p.long[:min(len(p.long), 1024)]), Reason: fmt.Sprintf("a line longer than %d bytes", MaxLine)}
			}
			p.long = append(p.long, b...)
		default:
			if len(b) > 0 || len(p.long) > 0 {
				// A last line without its newline: use it.
				if errors.Is(err, io.EOF) {
					return append(p.long, b...), nil
				}
				p.long = append(p.long, b...)
			}
			return nil, err
		}
	}
}

// next reads and parses the next line, waiting up to timeout (0: no
// limit) or until ctx is done. when says what the host was waiting for,
// in errors.
func (p *coproc) next(ctx context.Context, timeout time.Duration, when func() string) (Record, error) {
	if timeout > 0 {
		_ = p.stdout.SetReadDeadline(time.Now().Add(timeout))
	} else {
		_ = p.stdout.SetReadDeadline(time.Time{})
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = p.stdout.SetReadDeadline(time.Unix(1, 0)) })
	}
	b, err := p.readLine()
	if stop != nil && !stop() {
		return Record{}, fmt.Errorf("stopped waiting for the co-process %s: %w", when(), ctx.Err())
	}
	if err != nil {
		var pe *ProtocolError
		switch {
		case errors.As(err, &pe):
			return Record{}, fmt.Errorf("malformed line from the co-process %s: %w", when(), pe)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return Record{}, fmt.Errorf("%w: no answer within %v %s", errTimeout, timeout, when())
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
			return Record{}, p.exitError(when())
		}
		return Record{}, fmt.Errorf("reading the co-process %s: %w", when(), err)
	}
	rec, err := ParseRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("malformed line from the co-process %s: %w", when(), err)
	}
	return rec, nil
}

// errTimeout is wrapped when a co-process did not answer in time.
var errTimeout = errors.New("timed out")

// write writes b to the co-process' stdin in one call.
func (p *coproc) write(b []byte) error {
	if _, err := p.stdin.Write(b); err != nil {
		// A broken pipe means the co-process is gone (or closed its
		// stdin): say how it ended rather than how the write failed.
		if p.dead() || errors.Is(err, syscall.EPIPE) {
			return p.exitError("while being written to")
		}
		return fmt.Errorf("write to the co-process: %w", err)
	}
	return nil
}

// pipeCapacity is how many bytes the pipe of f holds (64 KiB unless the
// system gave less, as it does to a user past its pipe-buffer quota).
func pipeCapacity(f *os.File) int {
	n := 4096 // the least a pipe holds
	rc, err := f.SyscallConn()
	if err != nil {
		return n
	}
	_ = rc.Control(func(fd uintptr) {
		const fGetPipeSz = 1032 // F_GETPIPE_SZ
		if r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, fGetPipeSz, 0); errno == 0 && int(r) > n {
			n = int(r)
		}
	})
	return n
}

// pipeBudget bounds the bytes of requests in flight: while they fit in
// the stdin pipe, a write never waits for the co-process (which may itself
// be waiting for the host to read its answers: a deadlock).
func (p *coproc) pipeBudget() int { return p.pipeCap / 2 }

// stop ends the process: its stdin is closed (the protocol's "stop"),
// then after grace the whole process group is killed. It waits until the
// process is reaped. Safe to call more than once.
func (p *coproc) stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		_ = p.stdin.Close()
		if grace > 0 {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-p.exited:
				return
			case <-t.C:
			}
		}
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	})
	<-p.exited
	_ = p.stdout.Close()
}

// kill ends the process at once.
func (p *coproc) kill() { p.stop(0) }

// handshake reads the task's hello and answers with the welcome (or, when
// no version is common, an error line). It returns the hello and the
// negotiated version. In describe mode the hello is all that is wanted:
// the task may exit right after it (the helpers do), so a welcome that
// can no longer be written is not an error.
func (p *coproc) handshake(timeout time.Duration, task, process string, window int, describe bool) (Record, int64, error) {
	rec, err := p.next(context.Background(), timeout, func() string { return "during the handshake" })
	if err != nil {
		return Record{}, 0, err
	}
	if rec.Type != TypeHello {
		return Record{}, 0, fmt.Errorf(`the first line must be {"type":"hello",…}, got type %q`, rec.Type)
	}
	v, err := Negotiate(rec.Protocols)
	if err != nil {
		b := append([]byte(`{"type":"error","text":`), appendJSONString(nil, err.Error())...)
		_ = p.write(append(b, "}\n"...))
		return Record{}, 0, err
	}
	b := append([]byte(`{"type":"welcome","protocol":`), strconv.FormatInt(v, 10)...)
	b = append(b, `,"task":`...)
	b = appendJSONString(b, task)
	b = append(b, `,"process":`...)
	b = appendJSONString(b, process)
	b = append(b, `,"stateful":`...)
	b = strconv.AppendBool(b, rec.Stateful)
	if v >= 2 {
		b = append(b, `,"window":`...)
		b = strconv.AppendInt(b, int64(window), 10)
	}
	b = append(b, "}\n"...)
	if err := p.write(b); err != nil && !describe {
		return Record{}, 0, err
	}
	return rec, v, nil
}
