package monitor

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLevelOf(t *testing.T) {
	cpu := DefaultThresholds()[MetricCPU]
	misordered := Threshold{Levels: []Level{{"warn", 1}, {"severe", 2}}}
	tests := []struct {
		name      string
		th        Threshold
		v         float64
		wantLevel string
		wantThr   float64
	}{
		{"below every level", cpu, 1.0, LevelOK, 0},
		{"equal is not above", cpu, 1.4, LevelOK, 0},
		{"just above warn", cpu, 1.41, LevelWarn, 1.4},
		{"equal to severe is warn", cpu, 1.6, LevelWarn, 1.4},
		{"severe", cpu, 1.7, LevelSevere, 1.6},
		{"failsafe", cpu, 2.5, LevelFailsafe, 1.9},
		{"configured order wins over size", misordered, 3, "warn", 1},
		{"no levels is ok", Threshold{}, 1e9, LevelOK, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			level, thr := tt.th.LevelOf(tt.v)
			if level != tt.wantLevel || thr != tt.wantThr {
				t.Errorf("LevelOf(%v): got (%q, %v), want (%q, %v)", tt.v, level, thr, tt.wantLevel, tt.wantThr)
			}
		})
	}
}

func TestDefaultThresholds(t *testing.T) {
	tests := []struct {
		metric      string
		levels      []Level
		canFailsafe bool
	}{
		{MetricCPU, levels3(1.9, 1.6, 1.4), true},
		{MetricFDs, levels3(200, 150, 100), true},
		{MetricThreads, levels3(200, 150, 100), true},
		{MetricMemory, levels3(0.3, 0.15, 0.1), true},
		{MetricQueueFullness, levels3(0.95, 0.8, 0.6), false},
		{MetricDiskRead, levels3(18603324, 8801662, 4900831), false},
		{MetricDiskWrite, levels3(118603324, 18801662, 14900831), false},
		{MetricPassedMessages, levels2(20000, 10000), false},
		{MetricEmitMessages, levels2(20000, 10000), false},
		{MetricMessageFailure, levels2(0.1, 0.01), false},
		{MetricCompileFailureInternal, levels2(0.1, 0.01), false},
		{MetricCompileFailureExternal, levels2(0.1, 0.01), false},
		{MetricStartExternal, levels3(0.2, 0.1, 0.01), true},
		{MetricStartCoprocess, levels3(0.2, 0.1, 0.01), true},
	}
	def := DefaultThresholds()
	for _, tt := range tests {
		t.Run(tt.metric, func(t *testing.T) {
			got, ok := def[tt.metric]
			if !ok {
				t.Fatalf("no default for %s", tt.metric)
			}
			if !reflect.DeepEqual(got.Levels, tt.levels) || got.CanFailsafe != tt.canFailsafe {
				t.Errorf("got %+v, want {Levels:%+v CanFailsafe:%v}", got, tt.levels, tt.canFailsafe)
			}
		})
	}
	if len(def) != len(tests) {
		t.Errorf("defaults for %d metrics, want %d", len(def), len(tests))
	}
	for _, m := range []string{MetricStopInternal, MetricStartRequestExternal, MetricStartRequestInternal, MetricStopRequestExternal} {
		if _, ok := def[m]; ok {
			t.Errorf("%s has a default threshold, want none (never alerted)", m)
		}
	}
}

func TestParseThresholds(t *testing.T) {
	tests := []struct {
		name string
		cfg  map[string]any
		want map[string]Threshold
	}{
		{
			name: "one-key maps in configured order",
			cfg: map[string]any{"local.cpu.one_core": map[string]any{
				"levels":       []any{map[string]any{"failsafe": 3.5}, map[string]any{"warn": int64(2)}},
				"can_failsafe": false,
			}},
			want: map[string]Threshold{"local.cpu.one_core": {Levels: []Level{{"failsafe", 3.5}, {"warn", 2}}}},
		},
		{
			name: "strings",
			cfg: map[string]any{"x.y": map[string]any{
				"levels":       []any{"failsafe > 1.9", " severe>1.6 ", "warn > 1e3"},
				"can_failsafe": true,
			}},
			want: map[string]Threshold{"x.y": {Levels: levels3(1.9, 1.6, 1000), CanFailsafe: true}},
		},
		{
			name: "the original's name/threshold maps",
			cfg: map[string]any{"x.y": map[string]any{
				"levels":       []any{map[string]any{"name": "severe", "threshold": json.Number("0.5")}},
				"can_failsafe": int64(1),
			}},
			want: map[string]Threshold{"x.y": {Levels: []Level{{"severe", 0.5}}, CanFailsafe: true}},
		},
		{
			name: "can_failsafe left out keeps the default's",
			cfg: map[string]any{
				MetricMemory:        map[string]any{"levels": []any{"failsafe > 0.5"}},
				MetricQueueFullness: map[string]any{"levels": []any{"failsafe > 0.5"}},
				"custom.metric":     map[string]any{"levels": []any{"failsafe > 0.5"}},
			},
			want: map[string]Threshold{
				MetricMemory:        {Levels: []Level{{"failsafe", 0.5}}, CanFailsafe: true},
				MetricQueueFullness: {Levels: []Level{{"failsafe", 0.5}}},
				"custom.metric":     {Levels: []Level{{"failsafe", 0.5}}},
			},
		},
		{
			name: "empty levels turn alerts off",
			cfg:  map[string]any{MetricCPU: map[string]any{"levels": []any{}, "can_failsafe": 0.0}},
			want: map[string]Threshold{MetricCPU: {Levels: []Level{}}},
		},
		{
			name: "null levels turn alerts off",
			cfg:  map[string]any{MetricCPU: map[string]any{"levels": nil, "can_failsafe": false}},
			want: map[string]Threshold{MetricCPU: {Levels: []Level{}}},
		},
		{
			name: "nothing configured",
			cfg:  nil,
			want: map[string]Threshold{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseThresholds(tt.cfg)
			if err != nil {
				t.Fatalf("ParseThresholds: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseThresholdsErrors(t *testing.T) {
	lv := func(levels ...any) map[string]any {
		return map[string]any{"m.x": map[string]any{"levels": levels}}
	}
	tests := []struct {
		name string
		cfg  map[string]any
		want string // in the error, after `metric "m.x": `
	}{
		{"not a map", map[string]any{"m.x": "warn > 1"}, "want a map with levels and can_failsafe, got the string"},
		{"unknown key", map[string]any{"m.x": map[string]any{"levels": []any{}, "level": 1}}, `unknown key "level"`},
		{"levels missing", map[string]any{"m.x": map[string]any{"can_failsafe": true}}, "levels missing"},
		{"levels not a list", map[string]any{"m.x": map[string]any{"levels": "warn > 1"}}, "levels: want a list"},
		{"can_failsafe not a bool", map[string]any{"m.x": map[string]any{"levels": []any{}, "can_failsafe": "yes"}}, "can_failsafe: want true or false"},
		{"string without >", lv("warn > 1", "severe 2"), `levels[1]: "severe 2": want "<name> > <number>"`},
		{"string with >=", lv("warn >= 1"), `levels[0]: "warn >= 1": threshold "= 1" is not a number`},
		{"string with no name", lv(" > 1"), "levels[0]: empty level name"},
		{"map with two keys", lv(map[string]any{"warn": 1, "severe": 2}), "levels[0]: want one key"},
		{"map threshold not a number", lv(map[string]any{"warn": "1"}), `levels[0]: level "warn": want a number, got the string "1"`},
		{"named map without threshold", lv(map[string]any{"name": "warn"}), `levels[0]: level "warn": threshold missing`},
		{"named map extra key", lv(map[string]any{"name": "warn", "threshold": 1, "x": 2}), `levels[0]: unknown key "x"`},
		{"named map name not a string", lv(map[string]any{"name": 1, "threshold": 1}), "levels[0]: name: want a string"},
		{"level is a number", lv(1.5), "levels[0]: want {name: number} or \"name > number\", got the number 1.5"},
		{"ok is not a level", lv("ok > 1"), `levels[0]: "ok" is not a level`},
		{"duplicate level", lv("warn > 2", "warn > 1"), `levels[1]: level "warn" already given at levels[0]`},
		{"infinite threshold", lv("warn > inf"), `levels[0]: level "warn": threshold +Inf is not a finite number`},
		{"not JSON-compatible", map[string]any{"m.x": map[string]any{"levels": []any{make(chan int)}}}, `message: not JSON-compatible: at "levels[0]"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseThresholds(tt.cfg)
			if err == nil {
				t.Fatalf("got %+v and no error, want an error containing %q", got, tt.want)
			}
			if !errors.Is(err, ErrBadThresholds) {
				t.Errorf("error %q does not wrap ErrBadThresholds", err)
			}
			if !strings.Contains(err.Error(), `metric "m.x": `+tt.want) {
				t.Errorf("got error %q, want it to contain %q", err, `metric "m.x": `+tt.want)
			}
		})
	}
}

func TestMergeThresholdsSharesNothing(t *testing.T) {
	over := map[string]Threshold{MetricCPU: {Levels: []Level{{"warn", 1}}}}
	merged := mergeThresholds(DefaultThresholds(), over)
	over[MetricCPU].Levels[0].Threshold = 99
	if got := merged[MetricCPU].Levels[0].Threshold; got != 1 {
		t.Errorf("merged threshold after changing the override: got %v, want 1", got)
	}
	if got := merged[MetricMemory].Levels; !reflect.DeepEqual(got, levels3(0.3, 0.15, 0.1)) {
		t.Errorf("memory levels: got %+v, want the default", got)
	}
}
