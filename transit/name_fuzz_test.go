package transit_test

import (
	"strings"
	"testing"

	"github.com/multimodule/multimodule/transit"
)

// FuzzValidateQueueName checks that ValidateQueueName accepts exactly the
// names (1–200 bytes of [A-Za-z0-9_.-]), never panics, and that
// every refusal says which name and what was wrong.
func FuzzValidateQueueName(f *testing.F) {
	for _, s := range []string{
		"", "q", "MultiModule_control", "a.b-c_d", "no spaces", "a/b", "a*", "a>",
		"ünïcode", "\x00", "\xff\xfe", strings.Repeat("x", 200), strings.Repeat("x", 201),
		"..", "-", "q\n", "$JS.API",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := transit.ValidateQueueName(name)
		want := len(name) >= 1 && len(name) <= transit.MaxQueueNameLen
		for i := 0; i < len(name) && want; i++ {
			c := name[i]
			want = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		}
		if (err == nil) != want {
			t.Fatalf("ValidateQueueName(%q): got %v, want valid=%v", name, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "invalid queue name") {
			t.Fatalf("ValidateQueueName(%q): error %q does not say the queue name is invalid", name, err)
		}
	})
}
