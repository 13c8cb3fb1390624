package message_test

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/message"
)

// msg200 is a typical routed message, about 200 bytes as JSON.
var msg200 = []byte(`{"source":"Example1","previous_source":"Router","ct":12345,"outstr":"howdy","host":"web1.example.com","tags":["a","b","c"],"load":0.75,".ipc_transit_meta":{"send_ts":1700000000.123456,"hops":2}}`)

func BenchmarkCopy8Keys(b *testing.B) {
	m := message.Message{
		"source": "Example1", "ct": int64(1), "outstr": "howdy", "host": "web1",
		"load": 0.75, "ok": true, "tags": []any{"a", "b"},
		message.MetaKey: map[string]any{"send_ts": 1.7e9},
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Copy()
	}
}

func BenchmarkUnmarshal200B(b *testing.B) {
	b.SetBytes(int64(len(msg200)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := message.Unmarshal(msg200); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal200B(b *testing.B) {
	m, err := message.Unmarshal(msg200)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg200)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := message.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyRouted copies a message shaped like the bench scenarios'
// (four scalars, ~110-byte string, the transport's metadata): what the
// Router copies for every forward but the last.
func BenchmarkCopyRouted(b *testing.B) {
	m := message.Message{
		"seq": int64(12345), "bench_ts": int64(1795734695018641700), "source": "Producer",
		"pad":           "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		message.MetaKey: map[string]any{"send_ts": 1795734695.0186417},
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Copy()
	}
}

// TestCodecPaired (MM_CODEC_PAIRED=rounds) times Unmarshal and Marshal
// against encoding/json alone, in alternating blocks on one locked
// thread, by the thread's CPU time, and reports the medians and the
// median ratio of the pairs: load that comes and goes on a shared machine
// hits both sides of a pair alike.
func TestCodecPaired(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("MM_CODEC_PAIRED"))
	if rounds == 0 {
		t.Skip("set MM_CODEC_PAIRED=rounds to run")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := message.Unmarshal(msg200)
	if err != nil {
		t.Fatal(err)
	}
	stdMarshal := func() {
		n, _ := message.Normalize(m)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(map[string]any(n))
	}
	type op struct {
		name string
		f    func()
	}
	for _, p := range [][2]op{
		{{"encoding/json decode", func() { message.UnmarshalStd(msg200) }}, {"Unmarshal", func() { message.Unmarshal(msg200) }}},
		{{"encoding/json encode", stdMarshal}, {"Marshal", func() { message.Marshal(m) }}},
	} {
		a, b, ratio := pairedCPU(rounds, p[0].f, p[1].f)
		t.Logf("%-22s %6.0f ns (thread CPU, median)", p[0].name, a)
		t.Logf("%-22s %6.0f ns, ratio %.2f (quartiles %.2f–%.2f)", p[1].name, b, ratio[1], ratio[0], ratio[2])
	}
}

// pairedCPU times a and b in alternating blocks of 1000 calls and returns
// their median thread CPU time per call and the quartiles of b/a.
func pairedCPU(rounds int, a, b func()) (aNs, bNs float64, ratio [3]float64) {
	const block = 1000
	cpu := func() int64 {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return ts.Nano()
	}
	timeBlock := func(f func()) float64 {
		c0 := cpu()
		for range block {
			f()
		}
		return float64(cpu()-c0) / block
	}
	var as, bs, rs []float64
	for r := range rounds {
		var ta, tb float64
		if r%2 == 0 {
			ta, tb = timeBlock(a), timeBlock(b)
		} else {
			tb, ta = timeBlock(b), timeBlock(a)
		}
		as, bs, rs = append(as, ta), append(bs, tb), append(rs, tb/ta)
	}
	slices.Sort(as)
	slices.Sort(bs)
	slices.Sort(rs)
	n := len(rs)
	return as[n/2], bs[n/2], [3]float64{rs[n/4], rs[n/2], rs[n*3/4]}
}
