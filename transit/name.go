package transit

import (
	"fmt"
	"os"
	"strings"
)

// MaxQueueNameLen is the longest valid queue name.
const MaxQueueNameLen = 200

// ValidateQueueName reports whether name is a valid queue name: 1 to 200
// characters of letters, digits, '_', '-' and '.'. The error names the
// queue and the first bad character.
func ValidateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("transit: invalid queue name: empty (want 1-%d characters of [A-Za-z0-9_.-])", MaxQueueNameLen)
	}
	if len(name) > MaxQueueNameLen {
		return fmt.Errorf("transit: invalid queue name %.40q…: %d characters, at most %d allowed", name, len(name), MaxQueueNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !validQueueByte(name[i]) {
			r := []rune(name[i:])[0]
			return fmt.Errorf("transit: invalid queue name %q: character %q at byte %d (allowed: letters, digits, '_', '-', '.')", name, r, i)
		}
	}
	return nil
}

func validQueueByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

// encodeQueue maps a valid queue name to one subject token (and consumer
// name part): '.' becomes '~', which no queue name contains.
func encodeQueue(qname string) string { return strings.ReplaceAll(qname, ".", "~") }

// decodeQueue reverses encodeQueue.
func decodeQueue(tok string) string { return strings.ReplaceAll(tok, "~", ".") }

// SanitizeHost turns a host name into a host scope usable in subjects and
// stream names: every character other than letters, digits, '_' and '-'
// becomes '_' ("box2.example.com" → "box2_example_com"). An empty name
// gives "localhost".
func SanitizeHost(h string) string {
	if h == "" {
		return "localhost"
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

func defaultHost() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return SanitizeHost(h)
}
