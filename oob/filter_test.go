package oob_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/oob"
)

func TestFilters(t *testing.T) {
	send := []oob.Record{
		{Channel: "log", Task: "Foo", Text: "foo starting"},
		{Channel: "log", Task: "Bar", Text: "bar starting"},
		{Channel: "log", Task: "Foo", Text: "foo noisy tick"},
		{Channel: "log", Text: "framework"},
		{Channel: "alert", Task: "Foo", Text: "alert", Details: map[string]any{"level": "warn"}},
		{Channel: "alert", Task: "Foo", Text: "alert", Details: map[string]any{"level": "severe"}},
	}
	tests := []struct {
		name      string
		cfg       map[string]any
		wantLog   []string
		wantAlert []string // details.level of the alerts that passed
	}{
		{
			name:      "no filters pass everything",
			cfg:       nil,
			wantLog:   []string{"foo starting", "bar starting", "foo noisy tick", "framework"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name:      "include passes only matches",
			cfg:       map[string]any{"log": map[string]any{"include_matches": map[string]any{"foo only": map[string]any{"task": "Foo"}}}},
			wantLog:   []string{"foo starting", "foo noisy tick"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name: "several includes: any one passes",
			cfg: map[string]any{"log": map[string]any{"include_matches": map[string]any{
				"bar":       map[string]any{"task": "Bar"},
				"framework": map[string]any{"text": " special/^frame/"},
			}}},
			wantLog:   []string{"bar starting", "framework"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name:      "exclude drops matches",
			cfg:       map[string]any{"log": map[string]any{"exclude_matches": map[string]any{"ticks": map[string]any{"text": " special/tick/"}}}},
			wantLog:   []string{"foo starting", "bar starting", "framework"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name: "include then exclude",
			cfg: map[string]any{"log": map[string]any{
				"include_matches": map[string]any{"foo": map[string]any{"task": "Foo"}},
				"exclude_matches": map[string]any{"ticks": map[string]any{"text": " special/tick/"}},
			}},
			wantLog:   []string{"foo starting"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name:      "empty include passes everything",
			cfg:       map[string]any{"log": map[string]any{"include_matches": map[string]any{}}},
			wantLog:   []string{"foo starting", "bar starting", "foo noisy tick", "framework"},
			wantAlert: []string{"warn", "severe"},
		},
		{
			name: "filters are per channel; details are matchable",
			cfg: map[string]any{
				"alert":       map[string]any{"exclude_matches": map[string]any{"no warnings": map[string]any{"details": map[string]any{"level": "warn"}}}},
				"is_external": false, "intervals": map[string]any{"save_state": 5}, ".multimodule": map[string]any{},
			},
			wantLog:   []string{"foo starting", "bar starting", "foo noisy tick", "framework"},
			wantAlert: []string{"severe"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, oob.Handling{"log": "1", "alert": "2"}, oob.Options{})
			if err := r.d.SetFilters(tt.cfg); err != nil {
				t.Fatalf("SetFilters: %v", err)
			}
			for _, rec := range send {
				r.d.Handle(t.Context(), rec)
			}
			if got := texts(r.stdout.records(t)); !slices.Equal(got, tt.wantLog) {
				t.Errorf("log: got %q, want %q", got, tt.wantLog)
			}
			var levels []string
			for _, a := range r.stderr.records(t) {
				levels = append(levels, a.Details["level"].(string))
			}
			if !slices.Equal(levels, tt.wantAlert) {
				t.Errorf("alert levels: got %q, want %q", levels, tt.wantAlert)
			}
		})
	}
}

func TestFiltersChangeLive(t *testing.T) {
	r := newRig(t, oob.Handling{"log": "1"}, oob.Options{})
	drop := map[string]any{"log": map[string]any{"exclude_matches": map[string]any{"all": map[string]any{}}}}
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "one"})
	if err := r.d.SetFilters(drop); err != nil {
		t.Fatal(err)
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "two"})
	if err := r.d.SetFilters(map[string]any{}); err != nil {
		t.Fatal(err)
	}
	r.d.Handle(t.Context(), oob.Record{Channel: "log", Text: "three"})
	if got, want := texts(r.stdout.records(t)), []string{"one", "three"}; !slices.Equal(got, want) {
		t.Errorf("log: got %q, want %q", got, want)
	}
}

// TestBadFiltersKeepTheOldOnes: every bad config is rejected whole with
// an error naming where, and the filters in force stay.
func TestBadFiltersKeepTheOldOnes(t *testing.T) {
	good := map[string]any{"log": map[string]any{"exclude_matches": map[string]any{"quiet": map[string]any{"task": "Noisy"}}}}
	tests := []struct {
		name    string
		cfg     map[string]any
		wantErr string
	}{
		{"bad regex", map[string]any{
			"alert": map[string]any{"include_matches": map[string]any{"fine": map[string]any{"task": "X"}}},
			"log":   map[string]any{"include_matches": map[string]any{"broken": map[string]any{"text": " special/(/"}}},
		}, `channel "log": include_matches "broken": match:`},
		{"channel not a map", map[string]any{"log": "everything"}, `channel "log": want a map with include_matches and/or exclude_matches, got the string "everything"`},
		{"unknown key", map[string]any{"log": map[string]any{"include_match": map[string]any{}}}, `channel "log": unknown key "include_match"`},
		{"matches not a map", map[string]any{"error": map[string]any{"exclude_matches": []any{"x"}}}, `channel "error": exclude_matches: want a map of name → pattern, got a list`},
		{"pattern not a map", map[string]any{"alert": map[string]any{"exclude_matches": map[string]any{"warn": "level=warn"}}}, `channel "alert": exclude_matches "warn": a pattern must be a map, got the string "level=warn"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, oob.Handling{"log": "1", "alert": "1"}, oob.Options{})
			if err := r.d.SetFilters(good); err != nil {
				t.Fatalf("SetFilters(good): %v", err)
			}
			err := r.d.SetFilters(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SetFilters(bad): got %v, want an error containing %q", err, tt.wantErr)
			}
			r.d.Handle(t.Context(), oob.Record{Channel: "log", Task: "Noisy", Text: "dropped by the old filter"})
			r.d.Handle(t.Context(), oob.Record{Channel: "log", Task: "Calm", Text: "passes"})
			r.d.Handle(t.Context(), oob.Record{Channel: "alert", Task: "Y", Text: "no alert filter"})
			if got, want := texts(r.stdout.records(t)), []string{"passes", "no alert filter"}; !slices.Equal(got, want) {
				t.Errorf("after a rejected config: got %q, want %q", got, want)
			}
		})
	}
}
