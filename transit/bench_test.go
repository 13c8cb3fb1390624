package transit_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

// sinkMain consumes MM_QUEUE (bus in MM_DIR), acknowledging every
// message. It prints "ready" once consuming; with MM_LATENCY set, one line
// per message with the one-way latency in ns (now - send_ts); after
// MM_COUNT messages it prints "done", its CPU seconds and the number of
// bus messages they came in, and exits.
func sinkMain() int {
	count, _ := strconv.Atoi(os.Getenv("MM_COUNT"))
	lat := os.Getenv("MM_LATENCY") != ""
	if p := os.Getenv("MM_SINK_CPUPROFILE"); p != "" {
		// For docs/benchmarks.md: where the consumer's CPU goes.
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	tr, err := transit.Open(ctx, transit.Options{TransportDir: os.Getenv("MM_DIR"), Host: "testhost"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer tr.Close()
	c, err := tr.Consume(ctx, os.Getenv("MM_QUEUE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	n, busMsgs := 0, 0
	var lastSeq uint64
	for d := range c.C() {
		if d.Seq != lastSeq {
			lastSeq = d.Seq
			busMsgs++
		}
		if lat {
			ts, _ := d.Msg.SendTS()
			fmt.Println(time.Since(ts).Nanoseconds())
		}
		if err := d.Ack(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if n++; n == count {
			c.Stop()
		}
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Println("done", cpuSeconds(ru), busMsgs)
	return 0
}

func cpuSeconds(ru syscall.Rusage) float64 {
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// procCPU returns the CPU seconds process pid used so far.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// payload200 is a message of about 200 bytes once encoded with its meta.
func payload200(i int) message.Message {
	return message.Message{"i": int64(i), "source": "bench", "text": strings.Repeat("x", 110)}
}

func BenchmarkLocalSendReceive(b *testing.B) {
	tr := open(b, busDir(b), transit.Options{})
	l, err := tr.InProcess().Host("bench", 4096)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan int)
	go func() {
		// As a task's goroutine receives (host/runner.go): batches of
		// up to 64, sleeping on Ready when a Drain found nothing.
		n := 0
		var buf [64]message.Message
		for {
			k, ok := l.Drain(buf[:], nil)
			if !ok {
				break
			}
			n += k
			clear(buf[:k])
			if k == 0 {
				<-l.Ready()
			}
		}
		done <- n
	}()
	msg := payload200(0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := tr.Send(ctx, "bench", msg, transit.SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	tr.InProcess().Unhost("bench")
	n := <-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	_ = n
}

// BenchmarkBusCrossProcess: this process sends ~200-byte messages
// (SendAsync, pipelined), another process consumes them with explicit
// acknowledgement; the time runs until the consumer has acknowledged the
// last one.
func BenchmarkBusCrossProcess(b *testing.B) {
	dir := busDir(b)
	tr := open(b, dir, transit.Options{})
	sink := startChild(b, "sink", nil, "MM_DIR="+dir, "MM_QUEUE=xbench", "MM_COUNT="+strconv.Itoa(b.N))
	if l := sink.line(b, 30*time.Second); l != "ready" {
		b.Fatalf("sink: got %q, want ready", l)
	}
	ctx := context.Background()
	bi, _ := transit.ReadBusInfo(dir)
	busCPU := procCPU(bi.PID)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := tr.SendAsync(ctx, "xbench", payload200(i), transit.SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if err := tr.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	l := sink.line(b, 120*time.Second)
	b.StopTimer()
	var (
		sinkCPU float64
		busMsgs int
	)
	if _, err := fmt.Sscanf(l, "done %g %d", &sinkCPU, &busMsgs); err != nil {
		b.Fatalf("sink: got %q, want done, its CPU time and bus messages", l)
	}
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	// Where the CPU went, in µs per message.
	per := func(sec float64) float64 { return sec * 1e6 / float64(b.N) }
	b.ReportMetric(per(cpuSeconds(ru1)-cpuSeconds(ru0)), "sender-cpu-µs/msg")
	b.ReportMetric(per(procCPU(bi.PID)-busCPU), "bus-cpu-µs/msg")
	b.ReportMetric(per(sinkCPU), "consumer-cpu-µs/msg")
	b.ReportMetric(float64(b.N)/float64(max(busMsgs, 1)), "msgs/bus-msg")
	sink.wait(b, 30*time.Second)
}

// BenchmarkBusLatency: one lone message at a time (Send, durable) to a
// consumer in another process, which reports now - send_ts.
func BenchmarkBusLatency(b *testing.B) {
	dir := busDir(b)
	tr := open(b, dir, transit.Options{})
	sink := startChild(b, "sink", nil, "MM_DIR="+dir, "MM_QUEUE=lat", "MM_COUNT="+strconv.Itoa(b.N), "MM_LATENCY=1")
	if l := sink.line(b, 30*time.Second); l != "ready" {
		b.Fatalf("sink: got %q, want ready", l)
	}
	ctx := context.Background()
	lats := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if err := tr.Send(ctx, "lat", payload200(i), transit.SendOptions{}); err != nil {
			b.Fatal(err)
		}
		ns, err := strconv.ParseFloat(sink.line(b, 30*time.Second), 64)
		if err != nil {
			b.Fatal(err)
		}
		lats = append(lats, ns)
	}
	b.StopTimer()
	sort.Float64s(lats)
	b.ReportMetric(lats[len(lats)/2]/1e3, "p50-µs")
	b.ReportMetric(lats[len(lats)*99/100]/1e3, "p99-µs")
	sink.line(b, 30*time.Second) // done and CPU
}
