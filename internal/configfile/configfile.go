// Package configfile reads the daemon's config file (-c) and control
// messages' config: a map of task name → that task's config, in YAML or
// JSON, either bare or wrapped as {".multimodule": {"config": {...}}}.
// Documents are checked against MaxBytes, MaxDepth and MaxValues (YAML
// aliases expanded) before they are decoded.
package configfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/multimodule/multimodule/message"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("config: syntax error")

// Load reads and parses the config file at path. A file larger than
// MaxBytes is refused without being read.
func Load(path string) (map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("config %s: %w: more than %d bytes", path, ErrTooLarge, MaxBytes)
	}
	return Parse(path, data)
}

// Parse parses config text; name (usually the file's path) prefixes every
// error, which also says the line and column where YAML/JSON was wrong.
// The result is normalized to message value types, and each task's config
// is checked to be a map.
func Parse(name string, data []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return map[string]any{}, nil
	}
	if err := checkLimits(data); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	var raw any
	if err := yaml.UnmarshalWithOptions(data, &raw, yaml.UseOrderedMap()); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrSyntax, name, oneLine(yaml.FormatError(err, false, false)))
	}
	v, err := fromYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("config %s: the top level must be a map of task name to config, got %s", name, kind(v))
	}
	return Unwrap(name, top)
}

// Unwrap takes the task map out of the wrapped form
// {".multimodule": {"config": {...}}} (or returns a bare map as it is), and
// checks that every task's config is a map.
func Unwrap(name string, top map[string]any) (map[string]any, error) {
	cfg := top
	if mm, ok := top[".multimodule"]; ok {
		inner, ok := mm.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("config %s: .multimodule must be a map, got %s", name, kind(mm))
		}
		c, ok := inner["config"]
		if !ok {
			return nil, fmt.Errorf("config %s: .multimodule has no config key", name)
		}
		if cfg, ok = c.(map[string]any); !ok {
			return nil, fmt.Errorf("config %s: .multimodule.config must be a map, got %s", name, kind(c))
		}
	}
	for task, tc := range cfg {
		if _, ok := tc.(map[string]any); !ok {
			return nil, fmt.Errorf("config %s: task %q: config must be a map, got %s", name, task, kind(tc))
		}
	}
	return cfg, nil
}

var posRE = regexp.MustCompile(`^\[(\d+):(\d+)\]\s*`)

// oneLine makes a YAML error one line that starts with the position:
// "line 2, column 6: …".
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] // the rest is a source excerpt
	}
	return posRE.ReplaceAllString(s, "line $1, column $2: ")
}

func kind(v any) string { return message.Describe(v) }

// fromYAML converts decoded YAML to message value types: maps with string
// keys, int64/float64 numbers.
func fromYAML(v any) (any, error) {
	switch t := v.(type) {
	case yaml.MapSlice:
		out := make(map[string]any, len(t))
		for _, item := range t {
			k, ok := item.Key.(string)
			if !ok {
				ks, ok2 := message.ScalarText(item.Key)
				if !ok2 {
					if item.Key == nil {
						ks = "null"
					} else {
						ks = fmt.Sprint(item.Key)
					}
				}
				k = ks
			}
			e, err := fromYAML(item.Value)
			if err != nil {
				return nil, fmt.Errorf("at %q: %w", k, err)
			}
			out[k] = e
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			n, err := fromYAML(e)
			if err != nil {
				return nil, fmt.Errorf("at %q: %w", k, err)
			}
			out[k] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			n, err := fromYAML(e)
			if err != nil {
				return nil, fmt.Errorf("at [%d]: %w", i, err)
			}
			out[i] = n
		}
		return out, nil
	}
	return message.NormalizeValue(v)
}
