package transit

import (
	"fmt"
	"os"
	"strings"
)

// maxQueueNameLen is the longest valid queue name.
const maxQueueNameLen = 200

// ValidateQueueName reports whether name is a valid queue name: 1 to 200
// characters of letters, digits, '_', '-' and '.'. The error names the
// queue and the first bad character.
func ValidateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("transit: invalid queue name: empty (want 1-%d characters of [A-Za-z0-9_.-])", maxQueueNameLen)
	}
	if len(name) > maxQueueNameLen {
		return fmt.Errorf("transit: invalid queue name %.40q…: %d characters, at most %d allowed", name, len(name), maxQueueNameLen)
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

// maxHostNameLen is the longest valid host name (a host scope).
const maxHostNameLen = 64

// ValidateHost reports whether name is a valid host name, as given to
// Options.Host or SendOptions.Destination: 1 to 64 characters of
// letters, digits, '_', '-' and '.', where a '.' stands between two
// non-empty labels ("box2.example.com", not ".box", "box." or "a..b").
// The error names the host and the first bad character.
func ValidateHost(name string) error {
	const allowed = "letters, digits, '_', '-', and '.' between labels"
	if name == "" {
		return fmt.Errorf("transit: invalid host name: empty (want 1-%d characters: %s)", maxHostNameLen, allowed)
	}
	if len(name) > maxHostNameLen {
		return fmt.Errorf("transit: invalid host name %.40q…: %d characters, at most %d allowed", name, len(name), maxHostNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '.' {
			if i == 0 || i == len(name)-1 || name[i-1] == '.' {
				return fmt.Errorf("transit: invalid host name %q: empty label at byte %d (allowed: %s)", name, i, allowed)
			}
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			r := []rune(name[i:])[0]
			return fmt.Errorf("transit: invalid host name %q: character %q at byte %d (allowed: %s)", name, r, i, allowed)
		}
	}
	return nil
}

// hostScope is the host scope of a valid host name, usable in subjects
// and stream names: every '.' becomes '_' ("box2.example.com" →
// "box2_example_com"). A name without '.' is its own scope (no copy).
func hostScope(name string) string { return strings.ReplaceAll(name, ".", "_") }

// sanitizeHost turns any host name into a host scope: every character
// other than letters, digits, '_' and '-' becomes '_', and it is cut to
// 64 characters; an empty name gives "localhost". Only the system's host
// name (the default of Options.Host) goes through it: a host name given
// to Open or Send is checked with ValidateHost and refused when invalid.
func sanitizeHost(h string) string {
	if h == "" {
		return "localhost"
	}
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > maxHostNameLen {
		b = b[:maxHostNameLen]
	}
	return string(b)
}

func defaultHost() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return sanitizeHost(h)
}
