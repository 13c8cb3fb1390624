package oob_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/oob"
)

func TestParseHandling(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want oob.Handling
	}{
		{"empty gives the defaults", "", oob.Handling{"log": "1", "error": "2", "alert": "2", "debug": "./debug.out"}},
		{"one channel over the defaults", "alert:QUEUE", oob.Handling{"log": "1", "error": "2", "alert": "QUEUE", "debug": "./debug.out"}},
		{"spaces and empty items ignored", " log : 2 ,, debug:/var/log/mm/debug.log , ", oob.Handling{"log": "2", "error": "2", "alert": "2", "debug": "/var/log/mm/debug.log"}},
		{"new channel and router", "audit:router,metrics:mm.metrics-1", oob.Handling{"log": "1", "error": "2", "alert": "2", "debug": "./debug.out", "audit": "router", "metrics": "mm.metrics-1"}},
		{"a path may contain colons", "debug:./logs/a:b.out", oob.Handling{"log": "1", "error": "2", "alert": "2", "debug": "./logs/a:b.out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := oob.ParseHandling(tt.spec)
			if err != nil {
				t.Fatalf("ParseHandling(%q): %v", tt.spec, err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseHandling(%q): got %v, want %v", tt.spec, got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate of a parsed handling: %v", err)
			}
		})
	}
}

func TestParseHandlingErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantErr string
	}{
		{"no colon", "log", `-o item "log": want channel:handling`},
		{"no colon after a good item", "error:2,log", `-o item "log": want channel:handling`},
		{"empty channel name", ":1", `-o item ":1": empty channel name before the colon`},
		{"blank channel name", "  :2", `-o item ":2": empty channel name`},
		{"empty handling", "log:", `-o item "log:": empty handling after the colon`},
		{"channel twice", "log:1,log:2", `-o item "log:2": channel "log" is given twice`},
		{"other file descriptor", "log:3", `only 1 (stdout) and 2 (stderr) are file descriptors`},
		{"bad queue name", "alert:my queue", `handling "my queue" is not 1, 2, a path with a /, router or a valid queue name`},
		{"space in channel", "my log:1", `channel name "my log" contains a space`},
		{"queue name too long", "alert:" + strings.Repeat("q", 201), "at most 200 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := oob.ParseHandling(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseHandling(%q): got %v, error %v; want an error containing %q", tt.spec, got, err, tt.wantErr)
			}
		})
	}
}

func TestHandlingValidateAndString(t *testing.T) {
	tests := []struct {
		name    string
		h       oob.Handling
		wantStr string
		wantErr string
	}{
		{"defaults", oob.DefaultHandling(), "alert:2,debug:./debug.out,error:2,log:1", ""},
		{"empty handling", oob.Handling{"log": ""}, "log:", `handling of "log": empty handling`},
		{"bad queue", oob.Handling{"alert": "a,b"}, "alert:a,b", `handling of "alert": handling "a,b" is not`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.h.String(); got != tt.wantStr {
				t.Errorf("String: got %q, want %q", got, tt.wantStr)
			}
			err := tt.h.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaultHandlingIsAFreshCopy(t *testing.T) {
	h := oob.DefaultHandling()
	h["log"] = "changed"
	if got := oob.DefaultHandling()["log"]; got != "1" {
		t.Errorf("DefaultHandling()[log] after changing a copy: got %q, want 1", got)
	}
}
