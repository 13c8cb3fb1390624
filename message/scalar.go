package message

import (
	"encoding/json"
	"strconv"
)

// ScalarText returns the canonical text of a scalar value, the form in
// which scalars are compared (`1` and `"1"` are equal). Numbers use
// Perl's formatting (at most 15 significant digits, so 3.0 is "3"); bools
// and non-scalars report ok=false.
func ScalarText(v any) (s string, ok bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case int64:
		return strconv.FormatInt(t, 10), true
	case float64:
		return FormatFloat(t), true
	case json.Number:
		return string(t), true
	case int:
		return strconv.Itoa(t), true
	}
	return "", false
}

// FormatFloat formats f as Perl stringifies a number (%.15g): integral
// values print without a fraction, others with up to 15 significant digits.
func FormatFloat(f float64) string {
	if f == float64(int64(f)) && f < 1e15 && f > -1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', 15, 64)
}

// Int returns v as an int64 when it is a whole number (an int64, an
// integral float64, or a string holding an integer). Task code uses it to
// read counters without caring how they travelled.
func Int(v any) (int64, bool) {
	switch t := v.(type) {
	case int64:
		return t, true
	case int:
		return int64(t), true
	case float64:
		if t == float64(int64(t)) {
			return int64(t), true
		}
	case json.Number:
		i, err := t.Int64()
		return i, err == nil
	case string:
		i, err := strconv.ParseInt(t, 10, 64)
		return i, err == nil
	}
	return 0, false
}

// Float returns v as a float64 when it is a number or a numeric string.
func Float(v any) (float64, bool) {
	switch t := v.(type) {
	case float64:
		return t, true
	case int64:
		return float64(t), true
	case int:
		return float64(t), true
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(t, 64)
		return f, err == nil
	}
	return 0, false
}
