package mmtest

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// The processes of a test.
//
// Everything a test's MultiModule world runs names the Env's state
// directory on its command line (the daemons, the external processes, the
// bus) or is a child of a process that does (exec co-processes). Not all
// of them are children of the test process: externals are started by a
// daemon, the bus by whichever process needed it first, and a daemon the
// test killed leaves its externals behind. So the harness finds them by
// their command line, and its clean-up kills every one of them, with
// their descendants, until none is left — also one started just as the
// test ended (an external mid-migration, a bus restarted by a client
// that saw the old one go).
//
// Reaping: Main makes the test process a child subreaper, so that a
// process whose parent died (the externals of a killed daemon, a bus
// started by an external) becomes a child of the test process instead of
// pid 1, which in a sandbox may never reap it. Such adopted processes have
// nobody waiting for them, so the harness reaps them: while an Env lives
// (when a child of the test process ends, and every reapInterval) and at
// its clean-up. It reaps only processes it saw
// alive as belonging to an Env's state directory, and never one this test
// process started itself in its own session (the daemons of Start, the
// commands of Run and Command): their os/exec owners wait for those.

// reapInterval is how often a live Env reaps the test's processes that
// died since.
const reapInterval = time.Second

// procInfo is what the harness needs to know of one process.
type procInfo struct {
	pid, ppid, sid int
	state          string
	start          uint64
	cmdline        string
}

func (p procInfo) zombie() bool { return p.state == "Z" || p.state == "X" || p.state == "x" }

var (
	self    = os.Getpid()
	selfSID = func() int {
		sid, _, _ := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0)
		return int(sid)
	}()
)

// listProcs reads every process from /proc (nil if /proc cannot be read).
func listProcs() map[int]procInfo {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	out := make(map[int]procInfo, len(all))
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue // gone meanwhile
		}
		cmd, _ := p.CmdLine()
		out[p.PID] = procInfo{pid: p.PID, ppid: st.PPID, sid: st.Session, state: st.State, start: st.Starttime, cmdline: strings.Join(cmd, " ")}
	}
	return out
}

// belonging returns the processes (other than this one) whose command line
// contains dir, and their descendants, by pid.
func belonging(all map[int]procInfo, dir string) map[int]procInfo {
	out := map[int]procInfo{}
	children := map[int][]int{}
	for pid, p := range all {
		children[p.ppid] = append(children[p.ppid], pid)
		if pid != self && strings.Contains(p.cmdline, dir) {
			out[pid] = p
		}
	}
	queue := make([]int, 0, len(out))
	for pid := range out {
		queue = append(queue, pid)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if _, ok := out[c]; !ok && c != self {
				out[c] = all[c]
				queue = append(queue, c)
			}
		}
	}
	return out
}

// procTracker follows the processes of one state directory: it remembers
// those it may reap and reaps them once they are dead.
type procTracker struct {
	dir  string
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	reapable map[int]uint64 // pid → start time
	own      map[int]bool   // started by the Env (Start): their Wait reaps them
}

func newProcTracker(dir string) *procTracker {
	pt := &procTracker{dir: dir, stop: make(chan struct{}), done: make(chan struct{}), reapable: map[int]uint64{}, own: map[int]bool{}}
	go pt.run()
	return pt
}

func (pt *procTracker) run() {
	defer close(pt.done)
	tick := time.NewTicker(reapInterval)
	defer tick.Stop()
	// A child of ours that died, e.g. a daemon: its children are ours
	// now, to be noted before they die too.
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	for {
		select {
		case <-pt.stop:
			return
		case <-tick.C:
		case <-chld:
		}
		all := listProcs()
		pt.observe(all)
		pt.reap(all)
	}
}

// started records a process the Env started itself.
func (pt *procTracker) started(pid int) {
	pt.mu.Lock()
	pt.own[pid] = true
	delete(pt.reapable, pid)
	pt.mu.Unlock()
}

// observe records the processes of the directory that are ours to reap
// and returns the live ones.
func (pt *procTracker) observe(all map[int]procInfo) map[int]procInfo {
	mine := belonging(all, pt.dir)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	live := map[int]procInfo{}
	for pid, p := range mine {
		if p.zombie() {
			continue
		}
		live[pid] = p
		// A child of ours in our own session was started by this process
		// through os/exec (Start, Run, Command), which waits for it.
		if !pt.own[pid] && (p.ppid != self || p.sid != selfSID) {
			pt.reapable[pid] = p.start
		}
	}
	return live
}

// reap waits for the children of this process that died and are ours to
// reap: adopted orphans. Those are the processes recorded alive as
// reapable, and any in a session other than ours (externals and buses
// start their own sessions; this process starts none, but for the bus
// its transit client may start, whose reaper ignores the outcome). It
// forgets recorded processes that are gone.
func (pt *procTracker) reap(all map[int]procInfo) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for pid, p := range all {
		if p.ppid != self || !p.zombie() || pt.own[pid] {
			continue
		}
		if start, ok := pt.reapable[pid]; (ok && start == p.start) || p.sid != selfSID {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
	for pid, start := range pt.reapable {
		if p, ok := all[pid]; !ok || p.start != start {
			delete(pt.reapable, pid) // gone: reaped (by us or its parent)
		}
	}
}

// killAll kills (SIGKILL) every process of the directory and its
// descendants, again until none is left (a dying process may have
// started another), reaps those that are ours to reap, and returns the
// ones it killed and the ones still alive at the deadline.
func (pt *procTracker) killAll(timeout time.Duration) (killed, left []procInfo) {
	close(pt.stop)
	<-pt.done
	deadline := time.Now().Add(timeout)
	seen := map[int]bool{}
	for {
		live := pt.observe(listProcs())
		if len(live) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range live {
				left = append(left, p)
			}
			break
		}
		for pid, p := range live {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !seen[pid] {
				seen[pid] = true
				killed = append(killed, p)
			}
		}
		// Wait (briefly) until they are dead, reaping what is ours.
		for wait := time.Millisecond; time.Now().Before(deadline); wait = min(2*wait, 20*time.Millisecond) {
			all := listProcs()
			pt.reap(all)
			dead := true
			for pid, p := range live {
				if q, ok := all[pid]; ok && q.start == p.start && !q.zombie() {
					dead = false
					break
				}
			}
			if dead {
				break
			}
			time.Sleep(wait) // polling the kernel's process table, bounded by the deadline
		}
	}
	// Zombies whose reaping raced with the loop above.
	for i := 0; i < 50; i++ {
		pt.reap(listProcs())
		pt.mu.Lock()
		n := len(pt.reapable)
		pt.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	slices.SortFunc(killed, func(a, b procInfo) int { return a.pid - b.pid })
	return killed, left
}

func (p procInfo) String() string { return fmt.Sprintf("pid %d: %s", p.pid, p.cmdline) }

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER (linux/prctl.h).
const prSetChildSubreaper = 36

// becomeSubreaper makes orphaned descendants of this process its
// children (see the comment at the top of this file). Where that is not
// possible the harness still kills everything; orphans then go to pid 1.
func becomeSubreaper() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}
