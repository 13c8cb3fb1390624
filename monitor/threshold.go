package monitor

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/multimodule/multimodule/message"
)

// Level names. Any name may be configured; these are the ones the
// defaults use, plus LevelOK for "no level exceeded".
const (
	LevelOK       = "ok"
	LevelWarn     = "warn"
	LevelSevere   = "severe"
	LevelFailsafe = "failsafe" // failsafes the task when its metric can failsafe
)

// ErrBadThresholds is wrapped by every error of ParseThresholds.
var ErrBadThresholds = errors.New("monitor: bad thresholds")

// Level is one alert level of a metric: reached when the value strictly
// exceeds Threshold.
type Level struct {
	Name      string
	Threshold float64
}

// Threshold is a metric's ordered list of levels. Levels are walked in
// their order; the first whose threshold the value strictly exceeds wins,
// otherwise the level is "ok". An empty list never alerts. When
// CanFailsafe is set, reaching the level named "failsafe" failsafes the
// task; otherwise that level only alerts.
type Threshold struct {
	Levels      []Level
	CanFailsafe bool
}

// LevelOf returns the level value v reaches and that level's threshold
// (LevelOK and 0 when none is exceeded).
func (th Threshold) LevelOf(v float64) (name string, threshold float64) {
	for _, l := range th.Levels {
		if v > l.Threshold {
			return l.Name, l.Threshold
		}
	}
	return LevelOK, 0
}

// clone returns a copy that shares no slice with th.
func (th Threshold) clone() Threshold {
	th.Levels = slices.Clone(th.Levels)
	return th
}

// levels3 builds failsafe > f, severe > s, warn > w.
func levels3(f, s, w float64) []Level {
	return []Level{{LevelFailsafe, f}, {LevelSevere, s}, {LevelWarn, w}}
}

// levels2 builds severe > s, warn > w.
func levels2(s, w float64) []Level {
	return []Level{{LevelSevere, s}, {LevelWarn, w}}
}

// DefaultThresholds returns the thresholds that ship for every
// metric, with the original's numbers. Only CPU, file handles, threads,
// memory, external starts and co-process restarts (the same numbers) can
// failsafe; the queue-fullness and disk
// "failsafe" levels only alert. The start/stop request counts and
// internal stops have no thresholds (they are never alerted).
func DefaultThresholds() map[string]Threshold {
	return map[string]Threshold{
		MetricCPU:                    {Levels: levels3(1.9, 1.6, 1.4), CanFailsafe: true},
		MetricFDs:                    {Levels: levels3(200, 150, 100), CanFailsafe: true},
		MetricThreads:                {Levels: levels3(200, 150, 100), CanFailsafe: true},
		MetricMemory:                 {Levels: levels3(0.3, 0.15, 0.1), CanFailsafe: true},
		MetricDiskRead:               {Levels: levels3(18603324, 8801662, 4900831)},
		MetricDiskWrite:              {Levels: levels3(118603324, 18801662, 14900831)},
		MetricQueueFullness:          {Levels: levels3(0.95, 0.8, 0.6)},
		MetricPassedMessages:         {Levels: levels2(20000, 10000)},
		MetricEmitMessages:           {Levels: levels2(20000, 10000)},
		MetricMessageFailure:         {Levels: levels2(0.1, 0.01)},
		MetricCompileFailureInternal: {Levels: levels2(0.1, 0.01)},
		MetricCompileFailureExternal: {Levels: levels2(0.1, 0.01)},
		MetricStartExternal:          {Levels: levels3(0.2, 0.1, 0.01), CanFailsafe: true},
		MetricStartCoprocess:         {Levels: levels3(0.2, 0.1, 0.01), CanFailsafe: true},
	}
}

// mergeThresholds returns defaults with every metric of overrides replacing
// the default of that metric. Nothing is shared with the inputs.
func mergeThresholds(defaults, overrides map[string]Threshold) map[string]Threshold {
	out := make(map[string]Threshold, len(defaults)+len(overrides))
	for k, th := range defaults {
		out[k] = th.clone()
	}
	for k, th := range overrides {
		out[k] = th.clone()
	}
	return out
}

// ParseThresholds reads the MultiModule task's `thresholds` config: a map
// of metric name → {levels: [...], can_failsafe: bool}. Each level is one
// of
//
//	{warn: 1.4}                        # a map with one key: name → threshold
//	{name: warn, threshold: 1.4}       # the original's form
//	"warn > 1.4"                       # a string: name > threshold
//
// Levels keep their configured order. `levels: []` turns a metric's
// alerts off. When can_failsafe is left out, the metric keeps the
// default's (DefaultThresholds), so raising the CPU levels does not by
// accident stop CPU failsafes; a metric with no default cannot failsafe
// unless it says so. The result holds only the metrics configured; give
// it to Monitor.SetThresholds, which merges it over the defaults. Errors
// wrap ErrBadThresholds and name the metric and the level's index.
func ParseThresholds(cfg map[string]any) (map[string]Threshold, error) {
	defaults := DefaultThresholds()
	out := make(map[string]Threshold, len(cfg))
	metrics := slices.Sorted(maps.Keys(cfg)) // report the same error every time
	for _, metric := range metrics {
		th, err := parseThreshold(cfg[metric])
		if err != nil {
			return nil, fmt.Errorf("%w: metric %q: %v", ErrBadThresholds, metric, err)
		}
		canFailsafe := defaults[metric].CanFailsafe
		if th.CanFailsafe != nil {
			canFailsafe = *th.CanFailsafe
		}
		out[metric] = Threshold{Levels: th.Levels, CanFailsafe: canFailsafe}
	}
	return out, nil
}

// parsedThreshold is a Threshold whose CanFailsafe may be unset.
type parsedThreshold struct {
	Levels      []Level
	CanFailsafe *bool
}

func parseThreshold(v any) (parsedThreshold, error) {
	var th parsedThreshold
	v, err := message.NormalizeValue(v)
	if err != nil {
		return th, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return th, fmt.Errorf("want a map with levels and can_failsafe, got %s", describe(v))
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch k {
		case "levels":
		case "can_failsafe":
			b, err := parseBool(m[k])
			if err != nil {
				return th, fmt.Errorf("can_failsafe: %v", err)
			}
			th.CanFailsafe = &b
		default:
			return th, fmt.Errorf("unknown key %q (want levels, can_failsafe)", k)
		}
	}
	raw, present := m["levels"]
	if !present {
		return th, errors.New("levels missing (use levels: [] to turn the metric's alerts off)")
	}
	list, ok := raw.([]any)
	if !ok && raw != nil {
		return th, fmt.Errorf("levels: want a list, got %s", describe(raw))
	}
	th.Levels = make([]Level, 0, len(list))
	seen := map[string]int{}
	for i, item := range list {
		l, err := parseLevel(item)
		if err != nil {
			return th, fmt.Errorf("levels[%d]: %v", i, err)
		}
		if j, dup := seen[l.Name]; dup {
			return th, fmt.Errorf("levels[%d]: level %q already given at levels[%d]", i, l.Name, j)
		}
		seen[l.Name] = i
		th.Levels = append(th.Levels, l)
	}
	return th, nil
}

// parseLevel reads one level in any of the three accepted forms.
func parseLevel(item any) (Level, error) {
	var l Level
	switch t := item.(type) {
	case string:
		name, num, found := strings.Cut(t, ">")
		if !found {
			return l, fmt.Errorf("%q: want \"<name> > <number>\", e.g. \"warn > 1.4\"", t)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil {
			return l, fmt.Errorf("%q: threshold %q is not a number", t, strings.TrimSpace(num))
		}
		l = Level{Name: strings.TrimSpace(name), Threshold: f}
	case map[string]any:
		if _, has := t["name"]; has {
			for _, k := range slices.Sorted(maps.Keys(t)) {
				if k != "name" && k != "threshold" {
					return l, fmt.Errorf("unknown key %q (want name, threshold)", k)
				}
			}
			name, ok := t["name"].(string)
			if !ok {
				return l, fmt.Errorf("name: want a string, got %s", describe(t["name"]))
			}
			if _, has := t["threshold"]; !has {
				return l, fmt.Errorf("level %q: threshold missing", name)
			}
			f, ok := number(t["threshold"])
			if !ok {
				return l, fmt.Errorf("level %q: threshold: want a number, got %s", name, describe(t["threshold"]))
			}
			l = Level{Name: name, Threshold: f}
			break
		}
		if len(t) != 1 {
			return l, fmt.Errorf("want one key (e.g. {warn: 1.4}) or {name: ..., threshold: ...}, got %d keys", len(t))
		}
		for name, v := range t {
			f, ok := number(v)
			if !ok {
				return l, fmt.Errorf("level %q: want a number, got %s", name, describe(v))
			}
			l = Level{Name: name, Threshold: f}
		}
	default:
		return l, fmt.Errorf("want {name: number} or \"name > number\", got %s", describe(item))
	}
	switch {
	case l.Name == "":
		return l, errors.New("empty level name")
	case l.Name == LevelOK:
		return l, errors.New(`"ok" is not a level: it is what a value below every level is`)
	case math.IsNaN(l.Threshold) || math.IsInf(l.Threshold, 0):
		return l, fmt.Errorf("level %q: threshold %v is not a finite number", l.Name, l.Threshold)
	}
	return l, nil
}

// number returns v as a float64 when it is a number (not a string).
func number(v any) (float64, bool) {
	switch v.(type) {
	case string:
		return 0, false
	}
	return message.Float(v)
}

// parseBool accepts true/false and the numbers 0 and 1 (the original's
// Perl configs wrote can_failsafe => 1).
func parseBool(v any) (bool, error) {
	switch t := v.(type) {
	case bool:
		return t, nil
	case int64:
		if t == 0 || t == 1 {
			return t == 1, nil
		}
	case float64:
		if t == 0 || t == 1 {
			return t == 1, nil
		}
	}
	return false, fmt.Errorf("want true or false, got %s", describe(v))
}

// describe names a value's type and, for scalars, the value, for errors.
func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", t)
	case bool:
		return fmt.Sprintf("the bool %v", t)
	case int64, float64:
		return fmt.Sprintf("the number %v", t)
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%T", v)
}
