package transit

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
	"golang.org/x/sys/unix"

	"github.com/multimodule/multimodule/message"
)

// The bus decoder on github.com/goccy/go-json, as it would be if the
// library read bus messages: kept to measure this package's decoder
// against (BenchmarkDecodeSide, TestDecodePaired), and held to the same
// results by FuzzLibDecode so that the comparison is fair.

// useNumber is the library's UseNumber for Unmarshal (it exports the
// option on its stream Decoder only; the bit is its UseNumberOption, and
// FuzzLibDecode fails if that changes).
func useNumber(o *gojson.DecodeOption) { o.Flags |= 1 << 3 }

func libUnmarshal(data []byte) (message.Message, error) {
	var m map[string]any
	if err := gojson.UnmarshalWithOption(data, &m, useNumber); err != nil || m == nil {
		return message.Unmarshal(data)
	}
	if !libNumbers(m, 0) {
		return message.Unmarshal(data)
	}
	return message.Message(m), nil
}

func libDecodeExact(data []byte) (message.Message, error) {
	if !utf8.Valid(data) || bytes.Contains(data, []byte(`\u`)) {
		if at := lossyAt(data); at >= 0 {
			return nil, lossyError(data, at)
		}
	}
	return libUnmarshal(data)
}

// libNumbers converts json.Number values in place; false: leave it to message.
func libNumbers(m map[string]any, depth int) bool {
	if depth > canonicalDepth {
		return false
	}
	for k, v := range m {
		switch t := v.(type) {
		case json.Number:
			n, ok := libNumber(string(t))
			if !ok {
				return false
			}
			m[k] = n
		case map[string]any:
			if !libNumbers(t, depth+1) {
				return false
			}
		case []any:
			if !libList(t, depth+1) {
				return false
			}
		}
	}
	return true
}

func libList(l []any, depth int) bool {
	if depth > canonicalDepth {
		return false
	}
	for i, v := range l {
		switch t := v.(type) {
		case json.Number:
			n, ok := libNumber(string(t))
			if !ok {
				return false
			}
			l[i] = n
		case map[string]any:
			if !libNumbers(t, depth+1) {
				return false
			}
		case []any:
			if !libList(t, depth+1) {
				return false
			}
		}
	}
	return true
}

func libNumber(s string) (any, bool) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, true
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return nil, false
		}
		return json.Number(s), true
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

func checkLib(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := message.Unmarshal(data)
	got, err := libUnmarshal(data)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("libUnmarshal(%q): got error %v, want %v", data, err, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("libUnmarshal(%q): got %#v, want %#v", data, got, want)
	}
	exact, exactErr := libDecodeExact(data)
	if at := lossyAt(data); at >= 0 {
		if exactErr == nil {
			t.Fatalf("libDecodeExact(%q): no error, want one about byte %d", data, at)
		}
	} else if (exactErr == nil) != (wantErr == nil) || !reflect.DeepEqual(exact, want) {
		t.Fatalf("libDecodeExact(%q): got %#v, %v; want %#v, %v", data, exact, exactErr, want, wantErr)
	}
}

// FuzzLibDecode: the library's decoder, as used here, reads what
// message.Unmarshal reads.
func FuzzLibDecode(f *testing.F) {
	for _, s := range codecSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkLib(t, data) })
}

// BenchmarkDecodeSide: this package's decoder and the library's side by
// side, in one run.
func BenchmarkDecodeSide(b *testing.B) {
	m := message.Message{"i": int64(12345), "source": "bench", "text": strings.Repeat("x", 110),
		message.MetaKey: map[string]any{"send_ts": 1795725511.123456}}
	data, _ := message.Marshal(m)
	b.Logf("%d bytes", len(data))
	for _, bm := range []struct {
		name string
		f    func()
	}{
		{"unmarshal/ours", func() { unmarshal(data) }},
		{"unmarshal/goccy", func() { libUnmarshal(data) }},
		{"decodeExact/ours", func() { decodeExact(data) }},
		{"decodeExact/goccy", func() { libDecodeExact(data) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				bm.f()
			}
		})
	}
}

// TestDecodePaired (MM_DECODE_PAIRED=rounds) times ours and the library's
// in alternating blocks on one locked thread, by the thread's CPU time
// and by the wall clock, and reports the medians and the median ratio of
// the pairs: load that comes and goes hits both sides of a pair alike.
func TestDecodePaired(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("MM_DECODE_PAIRED"))
	if rounds == 0 {
		t.Skip("set MM_DECODE_PAIRED=rounds to run")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m := message.Message{"i": int64(12345), "source": "bench", "text": strings.Repeat("x", 110),
		message.MetaKey: map[string]any{"send_ts": 1795725511.123456}}
	data, _ := message.Marshal(m)
	type op struct {
		name string
		f    func()
	}
	pairs := [][2]op{
		{{"unmarshal/ours", func() { unmarshal(data) }}, {"unmarshal/goccy", func() { libUnmarshal(data) }}},
		{{"decodeExact/ours", func() { decodeExact(data) }}, {"decodeExact/goccy", func() { libDecodeExact(data) }}},
	}
	const block = 2000
	cpu := func() int64 {
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return ts.Nano()
	}
	timeBlock := func(f func()) (cpuNs, wallNs float64) {
		c0, w0 := cpu(), time.Now()
		for range block {
			f()
		}
		return float64(cpu()-c0) / block, float64(time.Since(w0).Nanoseconds()) / block
	}
	median := func(x []float64) float64 {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	for _, p := range pairs {
		var aCPU, bCPU, aWall, bWall, rCPU, rWall []float64
		for r := range rounds {
			var ac, aw, bc, bw float64
			if r%2 == 0 {
				ac, aw = timeBlock(p[0].f)
				bc, bw = timeBlock(p[1].f)
			} else {
				bc, bw = timeBlock(p[1].f)
				ac, aw = timeBlock(p[0].f)
			}
			aCPU, bCPU, aWall, bWall = append(aCPU, ac), append(bCPU, bc), append(aWall, aw), append(bWall, bw)
			rCPU, rWall = append(rCPU, bc/ac), append(rWall, bw/aw)
		}
		t.Logf("%-18s cpu %6.0f ns  wall %6.0f ns", p[0].name, median(aCPU), median(aWall))
		t.Logf("%-18s cpu %6.0f ns  wall %6.0f ns  library/ours: cpu %.2f (quartiles %.2f–%.2f), wall %.2f",
			p[1].name, median(bCPU), median(bWall), median(rCPU), quartile(rCPU, 1), quartile(rCPU, 3), median(rWall))
	}
}

func quartile(x []float64, q int) float64 {
	x = slices.Clone(x)
	slices.Sort(x)
	return x[len(x)*q/4]
}
