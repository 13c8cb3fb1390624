package bench

import (
	"bufio"
	"bytes"
	"io"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transit"
)

var transitOpts = transit.SendOptions{}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// readLatencies reads recv's JSON lines and sends each message's latency
// (now − bench_ts) until r ends.
func readLatencies(r io.Reader, out chan<- int64) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		t := time.Now().UnixNano()
		m, err := message.Unmarshal(sc.Bytes())
		if err != nil {
			continue
		}
		ts, ok := message.Int(m["bench_ts"])
		if !ok {
			continue
		}
		out <- max(t-ts, 0)
	}
}
