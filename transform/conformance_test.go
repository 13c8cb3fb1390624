package transform_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/transform"
)

// conformanceCase is one entry of testdata/transform.json (a byte-identical
// copy of shared/conformance/transform.json).
type conformanceCase struct {
	Name        string          `json:"name"`
	Message     json.RawMessage `json:"message"`
	Transform   json.RawMessage `json:"transform"`
	Expect      json.RawMessage `json:"expect"`
	ExpectError bool            `json:"expect_error"`
}

func loadConformance(t *testing.T) (cases, goSpecials []conformanceCase) {
	t.Helper()
	data, err := os.ReadFile("testdata/transform.json")
	if err != nil {
		t.Fatalf("read conformance file: %v", err)
	}
	var file struct {
		Cases      []conformanceCase `json:"cases"`
		GoSpecials []conformanceCase `json:"go_specials"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatalf("parse conformance file: %v", err)
	}
	if len(file.Cases) == 0 || len(file.GoSpecials) == 0 {
		t.Fatalf("conformance file has %d cases and %d go_specials, want both non-empty", len(file.Cases), len(file.GoSpecials))
	}
	return file.Cases, file.GoSpecials
}

// decode turns conformance JSON into a Message the way the transport does.
func decode(t *testing.T, raw json.RawMessage) message.Message {
	t.Helper()
	m, err := message.Unmarshal(raw)
	if err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return m
}

func TestConformance(t *testing.T) {
	cases, goSpecials := loadConformance(t)
	run := func(t *testing.T, c conformanceCase) {
		m := decode(t, c.Message)
		tr := decode(t, c.Transform)
		want := decode(t, c.Expect)

		compiled, err := transform.Compile(tr)
		if err != nil {
			t.Fatalf("Compile(%s): got error %v, want none", c.Transform, err)
		}
		err = compiled.Apply(m, nil)
		if gotErr := err != nil; gotErr != c.ExpectError {
			t.Errorf("Apply error: got %v, want an error: %v", err, c.ExpectError)
		}
		if !jsonEqual(map[string]any(m), map[string]any(want)) {
			t.Errorf("message after Apply: got %s, want %s", show(m), c.Expect)
		}
	}
	for _, c := range cases {
		t.Run("cases/"+c.Name, func(t *testing.T) { run(t, c) })
	}
	for _, c := range goSpecials {
		t.Run("go_specials/"+c.Name, func(t *testing.T) { run(t, c) })
	}
}

// jsonEqual compares canonical values as the conformance README says:
// numbers by value (1 and 1.0 are equal), everything else structurally.
// A number never equals a string here: transforms must keep types.
func jsonEqual(a, b any) bool { return message.Equal(a, b) }

func show(m message.Message) string {
	b, err := message.Marshal(m)
	if err != nil {
		return "<unmarshalable: " + err.Error() + ">"
	}
	return string(b)
}

func TestJSONEqual(t *testing.T) {
	tests := []struct {
		name string
		a, b any
		want bool
	}{
		{"int and float with the same value", int64(1), 1.0, true},
		{"different numbers", int64(1), int64(2), false},
		{"number and string", int64(1), "1", false},
		{"nested equal", map[string]any{"a": []any{int64(1), "x"}}, map[string]any{"a": []any{1.0, "x"}}, true},
		{"missing key", map[string]any{"a": nil}, map[string]any{"b": nil}, false},
		{"list length", []any{int64(1)}, []any{int64(1), int64(1)}, false},
		{"null and missing differ", map[string]any{"a": nil}, map[string]any{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := jsonEqual(tt.a, tt.b); got != tt.want {
				t.Errorf("jsonEqual(%#v, %#v): got %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}
