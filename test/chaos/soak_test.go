package chaos_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sample is what a soak run (MM_CHAOS_SOAK=1) records every
// MM_CHAOS_SAMPLE: the footprint of everything the run's state directory
// runs (the daemon, the external processes, their exec co-processes and
// the bus) and of the bus' store.
type Sample struct {
	At         time.Duration `json:"at"` // since the start of the run
	Sent       int           `json:"sent"`
	Delivered  int           `json:"delivered"`
	Procs      int           `json:"procs"`             // processes of the run
	RSSKiB     int64         `json:"rss_kib"`           // resident memory of all of them
	DaemonKiB  int64         `json:"daemon_rss_kib"`    // of the daemon alone
	BusKiB     int64         `json:"bus_rss_kib"`       // of the bus alone
	Goroutines int           `json:"daemon_goroutines"` // of the daemon (its /metrics), -1 if unknown
	OpenFiles  int           `json:"open_files"`        // file descriptors of all of them
	Threads    int           `json:"threads"`           // OS threads of all of them
	StoreBytes int64         `json:"bus_store_bytes"`   // the bus' store on disk (transit/jetstream)
}

// sample takes one Sample. It reads /proc for the run's own processes
// (found by mmtest through their command lines; the daemon's names the
// config file) and the daemon's /metrics (the daemon runs with --http 0
// in a soak run).
func (r *run) sample() Sample {
	r.mu.Lock()
	s := Sample{At: time.Since(r.start), Sent: len(r.sentAt), Delivered: len(r.seen), Goroutines: -1}
	r.mu.Unlock()
	for pid, cmd := range r.env.Processes() {
		rss, threads, ok := procStatus(pid)
		if !ok {
			continue
		}
		s.Procs++
		s.RSSKiB += rss
		s.Threads += threads
		if strings.Contains(cmd, r.cfgPath) {
			s.DaemonKiB = rss
		}
		if strings.Contains(cmd, " bus ") {
			s.BusKiB = rss
		}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.OpenFiles += len(fds)
		}
	}
	_ = filepath.WalkDir(filepath.Join(r.env.StateDir, "transit", "jetstream"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				s.StoreBytes += fi.Size()
			}
		}
		return nil
	})
	s.Goroutines = r.daemonGoroutines()
	return s
}

// procStatus returns VmRSS (KiB) and Threads of pid.
func procStatus(pid int) (rss int64, threads int, ok bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			rss, _ = strconv.ParseInt(fields[0], 10, 64)
		case "Threads":
			threads, _ = strconv.Atoi(fields[0])
		case "State":
			if fields[0] == "Z" {
				return 0, 0, false
			}
		}
	}
	return rss, threads, true
}

// daemonGoroutines reads go_goroutines from the daemon's /metrics, or -1.
func (r *run) daemonGoroutines() int {
	hi, err := r.env.Store().LoadHTTPInfo()
	if err != nil || hi == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(hi.URL, "/")+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(n)
			}
		}
	}
	return -1
}

// sampleEvery samples until ctx ends, first at once. A sample taken
// while the daemon is being restarted (a fault) is taken again a moment
// later, a few times.
func (r *run) sampleEvery(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		s := r.sample()
		for try := 0; try < 10 && (s.DaemonKiB == 0 || s.Goroutines < 0) && ctx.Err() == nil; try++ {
			time.Sleep(500 * time.Millisecond) // pacing of the retries, not synchronisation
			s = r.sample()
		}
		r.mu.Lock()
		r.samples = append(r.samples, s)
		r.mu.Unlock()
		r.t.Logf("sample %s", s)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s Sample) String() string {
	return fmt.Sprintf("%7.0fs sent %d delivered %d procs %d rss %d KiB (daemon %d, bus %d) goroutines %d fds %d threads %d store %d KiB",
		s.At.Seconds(), s.Sent, s.Delivered, s.Procs, s.RSSKiB, s.DaemonKiB, s.BusKiB, s.Goroutines, s.OpenFiles, s.Threads, s.StoreBytes>>10)
}

// sampleTable formats samples as the Markdown table of docs/reliability.md.
func sampleTable(samples []Sample) string {
	var b strings.Builder
	b.WriteString("| at | sent | delivered | processes | RSS, all (MiB) | daemon RSS (MiB) | bus RSS (MiB) | daemon goroutines | open files | threads | bus store (MiB) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %v | %d | %d | %d | %.1f | %.1f | %.1f | %d | %d | %d | %.1f |\n",
			s.At.Round(time.Second), s.Sent, s.Delivered, s.Procs, float64(s.RSSKiB)/1024, float64(s.DaemonKiB)/1024,
			float64(s.BusKiB)/1024, s.Goroutines, s.OpenFiles, s.Threads, float64(s.StoreBytes)/(1<<20))
	}
	return b.String()
}
