package monitor

import (
	"reflect"
	"testing"
	"time"

	"github.com/multimodule/multimodule/message"
)

func TestAlertMessage(t *testing.T) {
	base := Alert{
		Task: "Leaky", Check: CheckProcess, Bucket: "Leaky:local.memory.vss_of_box_physical",
		Metric: MetricMemory, Window: "five_minutes", WindowWidth: 5 * time.Minute,
		Value: 0.35, Threshold: 0.3, Level: LevelFailsafe, Previous: LevelSevere,
		Time: time.Unix(1700000000, 500_000_000), Failsafed: true,
	}
	base.Summary = base.summary()
	ok := base
	ok.Level, ok.Previous, ok.Threshold, ok.Value, ok.Failsafed = LevelOK, LevelWarn, 0, 0.01, false
	ok.Summary = ok.summary()
	tests := []struct {
		name string
		a    Alert
		want message.Message
	}{
		{"failsafe", base, message.Message{
			"task_name": "Leaky", "check_type": "process", "bucket_name": "Leaky:local.memory.vss_of_box_physical",
			"bucket_metric": "local.memory.vss_of_box_physical", "window": "five_minutes", "window_width": 300.0,
			"value": 0.35, "return_value": 0.35, "threshold": 0.3, "level": "failsafe", "previous_level": "severe",
			"summary": "five_minutes: Leaky:local.memory.vss_of_box_physical: 0.35 (0.3) is failsafe",
			"time":    1700000000.5, "failsafe": true,
		}},
		{"ok has no threshold", ok, message.Message{
			"task_name": "Leaky", "check_type": "process", "bucket_name": "Leaky:local.memory.vss_of_box_physical",
			"bucket_metric": "local.memory.vss_of_box_physical", "window": "five_minutes", "window_width": 300.0,
			"value": 0.01, "return_value": 0.01, "level": "ok", "previous_level": "warn",
			"summary": "five_minutes: Leaky:local.memory.vss_of_box_physical is ok",
			"time":    1700000000.5,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.a.Message()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Message:\ngot  %v\nwant %v", got, tt.want)
			}
			if _, err := message.Marshal(got); err != nil {
				t.Errorf("Marshal: %v", err)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1.4, "1.4"}, {1.41666666, "1.417"}, {0.0166666, "0.01667"}, {120, "120"},
		{4900831.4, "4900831"}, {-2.5, "-2.5"}, {999.95, "1000"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.v); got != tt.want {
			t.Errorf("formatValue(%v): got %q, want %q", tt.v, got, tt.want)
		}
	}
}
