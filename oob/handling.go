package oob

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Handling says where each channel goes: channel name → handling. A
// handling is "1" (stdout), "2" (stderr), a path containing "/" (append to
// that file), "router" (emit as a message) or any other value: the name of
// a queue to send to. A channel that has no entry goes where "error" goes.
type Handling map[string]string

// The handlings that are not files or queues.
const (
	HandlingStdout = "1"
	HandlingStderr = "2"
	HandlingRouter = "router"
)

// DefaultHandling returns the default handling of each channel:
// log:1, error:2, alert:2, debug:./debug.out.
func DefaultHandling() Handling {
	return Handling{
		ChannelLog:   HandlingStdout,
		ChannelError: HandlingStderr,
		ChannelAlert: HandlingStderr,
		ChannelDebug: "./debug.out",
	}
}

// ParseHandling reads the -o option, "channel:handling,channel:handling…",
// and returns it merged over DefaultHandling. Spaces around items, names
// and handlings are ignored, and so are empty items, so "" gives the
// defaults. The handling is everything after the first colon (a path may
// contain colons). Errors name the offending item: an item without a colon,
// an empty channel or handling, a channel given twice, a number other than
// 1 or 2, or a value that is neither a path nor a valid queue name.
func ParseHandling(spec string) (Handling, error) {
	h := DefaultHandling()
	seen := map[string]bool{}
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ch, how, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("oob: -o item %q: want channel:handling (e.g. log:1, debug:./debug.out, alert:QUEUE)", item)
		}
		ch, how = strings.TrimSpace(ch), strings.TrimSpace(how)
		if ch == "" {
			return nil, fmt.Errorf("oob: -o item %q: empty channel name before the colon", item)
		}
		if err := checkChannelName(ch); err != nil {
			return nil, fmt.Errorf("oob: -o item %q: %w", item, err)
		}
		if seen[ch] {
			return nil, fmt.Errorf("oob: -o item %q: channel %q is given twice", item, ch)
		}
		seen[ch] = true
		if err := checkHandling(how); err != nil {
			return nil, fmt.Errorf("oob: -o item %q: %w", item, err)
		}
		h[ch] = how
	}
	return h, nil
}

// Validate checks every entry of h as ParseHandling would, and reports the
// first bad one (channels in sorted order).
func (h Handling) Validate() error {
	for _, ch := range slices.Sorted(maps.Keys(h)) {
		if err := checkChannelName(ch); err != nil {
			return fmt.Errorf("oob: handling of %q: %w", ch, err)
		}
		if err := checkHandling(h[ch]); err != nil {
			return fmt.Errorf("oob: handling of %q: %w", ch, err)
		}
	}
	return nil
}

// String returns h in the -o form, channels sorted.
func (h Handling) String() string {
	var b strings.Builder
	for i, ch := range slices.Sorted(maps.Keys(h)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ch)
		b.WriteByte(':')
		b.WriteString(h[ch])
	}
	return b.String()
}

func checkChannelName(ch string) error {
	if ch == "" {
		return fmt.Errorf("empty channel name")
	}
	if strings.ContainsAny(ch, " \t\r\n,:") {
		return fmt.Errorf("channel name %q contains a space, comma or colon", ch)
	}
	return nil
}

// handlingKind classifies a handling value.
type handlingKind int

const (
	kindStdout handlingKind = iota
	kindStderr
	kindFile
	kindRouter
	kindQueue
)

func classify(how string) handlingKind {
	switch {
	case how == HandlingStdout:
		return kindStdout
	case how == HandlingStderr:
		return kindStderr
	case strings.Contains(how, "/"):
		return kindFile
	case how == HandlingRouter:
		return kindRouter
	}
	return kindQueue
}

func checkHandling(how string) error {
	if how == "" {
		return fmt.Errorf("empty handling after the colon (want 1, 2, a path with a /, router or a queue name)")
	}
	if classify(how) != kindQueue {
		return nil
	}
	if isDigits(how) {
		return fmt.Errorf("handling %q: only 1 (stdout) and 2 (stderr) are file descriptors; write a file as ./%s if that is meant", how, how)
	}
	return checkQueueName(how)
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// checkQueueName applies the queue-name rule: 1–200 characters of letters, digits and
// "_", "-", ".".
func checkQueueName(q string) error {
	if len(q) > 200 {
		return fmt.Errorf("handling %q: a queue name has at most 200 characters, got %d", q, len(q))
	}
	for _, c := range q {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("handling %q is not 1, 2, a path with a /, router or a valid queue name (letters, digits, _ - . only; found %q)", q, c)
		}
	}
	return nil
}
