package exectask_test

import (
	"testing"

	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) { mmtest.Main(m) }
