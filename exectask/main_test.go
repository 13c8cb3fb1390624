package exectask_test

import (
	"os"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
)

func TestMain(m *testing.M) {
	// `go test -fuzz` re-runs this binary as its fuzz workers, with the
	// environment mmtest.Main set for children: they must run the fuzz
	// target, not the multimodule command line.
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzzworker") {
			os.Unsetenv(mmtest.EnvMain)
		}
	}
	mmtest.Main(m)
}
