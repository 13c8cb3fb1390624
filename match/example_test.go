package match_test

import (
	"fmt"

	"github.com/multimodule/multimodule/match"
	"github.com/multimodule/multimodule/message"
)

func Example() {
	p, err := match.Compile(map[string]any{
		"source": "Example1",
		"host":   " special/^(?P<role>[a-z]+)[0-9]+$/",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	msgs := []message.Message{
		{"source": "Example1", "host": "web12", "ct": int64(5)},
		{"source": "Example1", "host": "db"},
		{"source": "Example2", "host": "web12"},
	}
	for _, m := range msgs {
		ok, caps := p.MatchCaptures(m)
		fmt.Println(ok, caps)
	}
	// Output:
	// true map[role:web]
	// false map[]
	// false map[]
}

func ExampleCompile_error() {
	_, err := match.Compile(map[string]any{"a": map[string]any{"b": " special/(/"}})
	fmt.Println(err)
	// Output:
	// match: at "a.b": bad regex " special/(/": error parsing regexp: missing closing ): `(`
}

func ExampleMatch() {
	// Numbers compare by their text: 3 equals "3" and 3.0, but not "3.0".
	for _, v := range []any{"3", 3.0, "3.0"} {
		ok, _ := match.Match(message.Message{"n": int64(3)}, map[string]any{"n": v})
		fmt.Printf("%#v: %v\n", v, ok)
	}
	// Output:
	// "3": true
	// 3: true
	// "3.0": false
}
