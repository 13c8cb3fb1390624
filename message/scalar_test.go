package message_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/multimodule/multimodule/message"
)

func TestFormatFloat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{3.0, "3"},
		{-3.0, "-3"},
		{0, "0"},
		{0.1, "0.1"},
		{0.1 + 0.2, "0.3"},
		{1.5, "1.5"},
		{1.0 / 3, "0.333333333333333"},
		{123456789.125, "123456789.125"},
		{1e14, "100000000000000"},
		{1e15, "1e+15"},
		{1e21, "1e+21"},
		{1.5e300, "1.5e+300"},
		{1e-5, "1e-05"},
		{0.0001, "0.0001"},
		{math.NaN(), "NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := message.FormatFloat(tt.in); got != tt.want {
				t.Errorf("FormatFloat(%v): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestScalarText(t *testing.T) {
	tests := []struct {
		name   string
		in     any
		want   string
		wantOK bool
	}{
		{"string", "abc", "abc", true},
		{"empty string", "", "", true},
		{"int64", int64(-12), "-12", true},
		{"int", 7, "7", true},
		{"integral float like Perl", 3.0, "3", true},
		{"float", 0.1, "0.1", true},
		{"big float", 1e21, "1e+21", true},
		{"json.Number as written", json.Number("123456789012345678901234567890"), "123456789012345678901234567890", true},
		{"bool is not a scalar here", true, "", false},
		{"null", nil, "", false},
		{"list", []any{"a"}, "", false},
		{"map", map[string]any{}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := message.ScalarText(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ScalarText(%#v): got %q, %v, want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		name   string
		in     any
		want   int64
		wantOK bool
	}{
		{"int64", int64(5), 5, true},
		{"int", -5, -5, true},
		{"integral float", 5.0, 5, true},
		{"fractional float", 5.5, 0, false},
		{"json.Number in range", json.Number("42"), 42, true},
		{"json.Number too big", json.Number("123456789012345678901234567890"), 0, false},
		{"numeric string", "42", 42, true},
		{"non-numeric string", "x", 0, false},
		{"float string", "4.5", 0, false},
		{"null", nil, 0, false},
		{"bool", true, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := message.Int(tt.in)
			if ok != tt.wantOK || ok && got != tt.want {
				t.Errorf("Int(%#v): got %d, %v, want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestFloat(t *testing.T) {
	tests := []struct {
		name   string
		in     any
		want   float64
		wantOK bool
	}{
		{"float", 2.5, 2.5, true},
		{"int64", int64(2), 2, true},
		{"int", 3, 3, true},
		{"json.Number", json.Number("1e3"), 1000, true},
		{"numeric string", "0.25", 0.25, true},
		{"non-numeric string", "x", 0, false},
		{"null", nil, 0, false},
		{"list", []any{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := message.Float(tt.in)
			if ok != tt.wantOK || ok && got != tt.want {
				t.Errorf("Float(%#v): got %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestTruthy(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want bool
	}{
		{"null", nil, false},
		{"false", false, false},
		{"true", true, true},
		{"empty string", "", false},
		{"string zero", "0", false},
		{"string 0.0 is true in Perl", "0.0", true},
		{"string", "x", true},
		{"int64 zero", int64(0), false},
		{"int64", int64(2), true},
		{"int zero", 0, false},
		{"float zero", 0.0, false},
		{"float", 0.5, true},
		{"empty list is a true reference", []any{}, true},
		{"empty map is a true reference", map[string]any{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := message.Truthy(tt.in); got != tt.want {
				t.Errorf("Truthy(%#v): got %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
