package placement_test

import (
	"testing"

	"github.com/multimodule/multimodule/mmtest"
)

// TestMain lets the test binary run the bus (and multimodule) for the
// tests that need one.
func TestMain(m *testing.M) { mmtest.Main(m) }
