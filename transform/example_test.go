package transform_test

import (
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

func ExampleTransform_Apply() {
	// Compile once, when the configuration is loaded...
	tr, err := transform.Compile(map[string]any{
		"seen_by":  "router",
		"hostname": ` specials/"host-" + captures.host`,
		"doubled":  " specials/message.ct * 2",
		"broken":   " specials/message.nope.deeper",
	})
	if err != nil {
		fmt.Println("config error:", err)
		return
	}

	// ...then apply to each message, with the captures of the route's match.
	m := message.Message{"ct": int64(21)}
	err = tr.Apply(m, map[string]string{"host": "web1"})
	fmt.Println("error:", err)

	out, _ := message.Marshal(m)
	fmt.Println(string(out))
	// Output:
	// error: transform: key "broken": special "message.nope.deeper": cannot fetch deeper from <nil> (column 14)
	// {"ct":21,"doubled":42,"hostname":"host-web1","seen_by":"router"}
}

func ExampleCompile() {
	_, err := transform.Compile(map[string]any{"x": ` specials/readFile("/etc/passwd")`})
	fmt.Println(err)
	// Output:
	// transform: key "x": special: unknown name readFile (column 1)
}
