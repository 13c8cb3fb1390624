package oob

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

// The keys of one channel's filter config.
const (
	KeyIncludeMatches = "include_matches"
	KeyExcludeMatches = "exclude_matches"
)

// namedPattern is one compiled filter pattern and the name it was given.
type namedPattern struct {
	name string
	p    *match.Pattern
}

// channelFilter is the compiled filter of one channel.
type channelFilter struct {
	include []namedPattern // non-empty: a record passes only if one matches
	exclude []namedPattern // a record that matches any is dropped
}

// filterSet is an immutable set of compiled filters, channel → filter;
// SetFilters replaces it whole.
type filterSet map[string]*channelFilter

// passes reports whether m (a record's message) passes f.
func (f *channelFilter) passes(m message.Message) bool {
	if len(f.include) > 0 {
		ok := false
		for _, np := range f.include {
			if np.p.Match(m) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, np := range f.exclude {
		if np.p.Match(m) {
			return false
		}
	}
	return true
}

// frameworkKeys are keys the framework reads in every task's config;
// they may sit beside the channels in the OutOfBand task's config
// and are not channels.
var frameworkKeys = map[string]bool{"is_external": true, "intervals": true}

// compileFilters compiles the OutOfBand task's config:
//
//	{<channel>: {include_matches: {<name>: <pattern>}, exclude_matches: {<name>: <pattern>}}}
//
// Keys starting with "." and the framework keys is_external and intervals
// are skipped. Everything else must be a channel with a map value holding
// only include_matches and exclude_matches, each a map of name → pattern
// map. The first error (channels and names in sorted order) names the
// channel, the kind and the name.
func compileFilters(cfg map[string]any) (filterSet, error) {
	fs := filterSet{}
	for _, ch := range slices.Sorted(maps.Keys(cfg)) {
		if strings.HasPrefix(ch, ".") || frameworkKeys[ch] {
			continue
		}
		chCfg, ok := asMap(cfg[ch])
		if !ok {
			return nil, fmt.Errorf("oob: filters: channel %q: want a map with %s and/or %s, got %s", ch, KeyIncludeMatches, KeyExcludeMatches, describe(cfg[ch]))
		}
		for _, k := range slices.Sorted(maps.Keys(chCfg)) {
			if k != KeyIncludeMatches && k != KeyExcludeMatches {
				return nil, fmt.Errorf("oob: filters: channel %q: unknown key %q (want %s or %s)", ch, k, KeyIncludeMatches, KeyExcludeMatches)
			}
		}
		include, err := compileNamed(ch, KeyIncludeMatches, chCfg[KeyIncludeMatches])
		if err != nil {
			return nil, err
		}
		exclude, err := compileNamed(ch, KeyExcludeMatches, chCfg[KeyExcludeMatches])
		if err != nil {
			return nil, err
		}
		if len(include) > 0 || len(exclude) > 0 {
			fs[ch] = &channelFilter{include: include, exclude: exclude}
		}
	}
	return fs, nil
}

func compileNamed(ch, kind string, v any) ([]namedPattern, error) {
	if v == nil {
		return nil, nil
	}
	named, ok := asMap(v)
	if !ok {
		return nil, fmt.Errorf("oob: filters: channel %q: %s: want a map of name → pattern, got %s", ch, kind, describe(v))
	}
	var out []namedPattern
	for _, name := range slices.Sorted(maps.Keys(named)) {
		pm, ok := asMap(named[name])
		if !ok {
			return nil, fmt.Errorf("oob: filters: channel %q: %s %q: a pattern must be a map, got %s", ch, kind, name, describe(named[name]))
		}
		p, err := match.Compile(pm)
		if err != nil {
			return nil, fmt.Errorf("oob: filters: channel %q: %s %q: %w", ch, kind, name, err)
		}
		out = append(out, namedPattern{name: name, p: p})
	}
	return out, nil
}

func asMap(v any) (map[string]any, bool) {
	switch t := v.(type) {
	case map[string]any:
		return t, true
	case message.Message:
		return map[string]any(t), true
	}
	return nil, false
}
