package oob_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/oob"
)

func ExampleParseHandling() {
	h, err := oob.ParseHandling("alert:ops_alerts,debug:/var/log/mm/debug.out")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(h)

	_, err = oob.ParseHandling("log")
	fmt.Println(err)
	// Output:
	// alert:ops_alerts,debug:/var/log/mm/debug.out,error:2,log:1
	// oob: -o item "log": want channel:handling (e.g. log:1, debug:./debug.out, alert:QUEUE)
}

func ExampleDispatcher_Handle() {
	d := oob.New(oob.Options{
		Handling: oob.Handling{"log": "1"},
		Stdout:   os.Stdout,
		Terminal: func(io.Writer) bool { return true }, // human lines
	})
	defer d.Close()
	d.Handle(context.Background(), oob.Record{
		Channel: "log", Task: "Example1", Text: "counting", PID: 1234,
		Time:    time.Date(2026, 11, 26, 20, 27, 36, 123e6, time.UTC),
		Details: map[string]any{"ct": 7, "outstr": "howdy"},
	})
	// Output:
	// 2026-11-26T20:27:36.123Z 1234 LOG Example1: counting ct=7 outstr=howdy
}

func ExampleNewSlogHandler() {
	send := func(_ context.Context, qname string, m message.Message) error {
		r, _ := oob.RecordFromMessage(m)
		fmt.Printf("%s ← %s %q task=%q details=%v\n", qname, r.Channel, r.Text, r.Task, r.Details)
		return nil
	}
	d := oob.New(oob.Options{
		Handling:  oob.Handling{"log": "logs", "error": "errors", "alert": "alerts"},
		SendQueue: send,
	})
	defer d.Close()
	log := slog.New(oob.NewSlogHandler(d)).With("task", "MultiModule")

	log.Info("task loaded")
	log.Warn("queue filling", "queue", "Foo")
	log.Error("threshold crossed", "channel", "alert", "level", "severe")
	log.Debug("not produced at -d 0")
	// Output:
	// logs ← log "task loaded" task="MultiModule" details=map[]
	// logs ← log "queue filling" task="MultiModule" details=map[level:WARN queue:Foo]
	// alerts ← alert "threshold crossed" task="MultiModule" details=map[level:severe]
}

func ExampleDispatcher_SetFilters() {
	d := oob.New(oob.Options{
		Handling: oob.Handling{"log": "1"},
		Stdout:   os.Stdout,
		Terminal: func(io.Writer) bool { return true },
	})
	defer d.Close()
	err := d.SetFilters(map[string]any{
		"log": map[string]any{
			"exclude_matches": map[string]any{
				"chatty ticks": map[string]any{"task": "Ticker", "text": " special/^tick/"},
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	at := time.Date(2026, 11, 26, 20, 27, 36, 0, time.UTC)
	for _, text := range []string{"tick 1", "started", "tick 2"} {
		d.Handle(context.Background(), oob.Record{Channel: "log", Task: "Ticker", Text: text, PID: 1, Time: at})
	}
	// Output:
	// 2026-11-26T20:27:36.000Z 1 LOG Ticker: started
}
