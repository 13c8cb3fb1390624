package router_test

import (
	"context"
	"fmt"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/router"
)

func Example() {
	r, err := router.Compile(map[string]any{
		"routes": []any{
			map[string]any{
				"match":     map[string]any{"path": " special/^/users/(?P<user>[a-z]+)$/"},
				"transform": map[string]any{"user": " specials/captures.user"},
				"forwards": []any{
					map[string]any{"qname": "users"},
					map[string]any{"qname": "audit", "destination": "box2"},
				},
				".router_control": map[string]any{"short_circuit": true},
			},
			map[string]any{
				"match":    map[string]any{},
				"forwards": []any{map[string]any{"qname": "other"}},
			},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	show := router.ForwarderFunc(func(_ context.Context, fwd router.Forward, msg message.Message) error {
		b, _ := message.Marshal(msg)
		fmt.Println(fwd, string(b))
		return nil
	})
	for _, m := range []message.Message{{"path": "/users/dana"}, {"path": "/about"}} {
		if err := r.Route(context.Background(), m, show); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(r.Stats()["audit@box2"])
	// Output:
	// users {"path":"/users/dana","user":"dana"}
	// audit@box2 {"path":"/users/dana","user":"dana"}
	// other {"path":"/about"}
	// {1 1 0}
}

func ExampleCompile_error() {
	_, err := router.Compile(map[string]any{"routes": []any{
		map[string]any{"match": map[string]any{}, "forwards": []any{map[string]any{"qname": int64(7)}}},
	}})
	fmt.Println(err)
	// Output:
	// router: route 0: forwards[0]: qname must be a string, got a number
}
