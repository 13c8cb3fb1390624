package monitor_test

import (
	"fmt"
	"time"

	"github.com/multimodule/multimodule/monitor"
)

// A task's CPU goes above 1.4 cores for a while, then back down: one warn
// alert, then one ok, however often the monitor evaluates in between.
func Example() {
	start := time.Unix(1_700_000_000, 0)
	m := monitor.New(monitor.Options{
		OnAlert: func(a monitor.Alert) { fmt.Println(a.Summary) },
		OnFailsafe: func(task string, a monitor.Alert) {
			fmt.Println("failsafe", task) // write <Task>.failsafe, stop the task
		},
	})
	for s := 0; s <= 240; s++ {
		now := start.Add(time.Duration(s) * time.Second)
		cores := 1.5
		if s > 120 {
			cores = 0.2
		}
		m.Record("Worker", monitor.MetricCPU, now, cores) // every second
		if s%5 == 0 {
			m.Evaluate(now) // every 5 seconds
		}
	}
	fmt.Println(m.Levels("Worker"))
	// Output:
	// one_minute: Worker:local.cpu.one_core: 1.5 (1.4) is warn
	// one_minute: Worker:local.cpu.one_core is ok
	// map[local.cpu.one_core/five_minutes:ok local.cpu.one_core/one_minute:ok]
}

// The MultiModule task's `thresholds` config, in any of the accepted
// level forms, becomes live overrides.
func ExampleParseThresholds() {
	cfg := map[string]any{ // as decoded from YAML or JSON
		"local.cpu.one_core": map[string]any{
			"levels": []any{"failsafe > 3.5", map[string]any{"severe": 3.0}, map[string]any{"name": "warn", "threshold": 2.5}},
		},
	}
	th, err := monitor.ParseThresholds(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", th["local.cpu.one_core"])
	// monitor.New(...).SetThresholds(th)

	_, err = monitor.ParseThresholds(map[string]any{"local.cpu.one_core": map[string]any{"levels": []any{"warn >= 1"}}})
	fmt.Println(err)
	// Output:
	// {Levels:[{Name:failsafe Threshold:3.5} {Name:severe Threshold:3} {Name:warn Threshold:2.5}] CanFailsafe:true}
	// monitor: bad thresholds: metric "local.cpu.one_core": levels[0]: "warn >= 1": threshold "= 1" is not a number
}
