package daemon_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	benchtasks "github.com/multimodule/multimodule/internal/bench/tasks"
	"github.com/multimodule/multimodule/message"
	"github.com/multimodule/multimodule/mmtest"
	"github.com/multimodule/multimodule/store"
)

// TestConfigsWholeAfterKill: a daemon killed (SIGKILL) while it saves a
// batch of configs leaves every config file whole — the version before
// the batch or the one in it, never torn, never gone — and a restarted
// daemon loads them all without a corrupt file.
func TestConfigsWholeAfterKill(t *testing.T) {
	env := mmtest.NewEnv(t)
	const n = 300
	batch := func(v string) map[string]any {
		cfg := map[string]any{}
		for i := range n {
			cfg[benchtasks.IdleName(i)] = map[string]any{"v": v, "pad": strings.Repeat(v, 50)}
		}
		return cfg
	}
	// onDisk counts the tasks' config files by version; a file that is
	// not a whole config of either version is an error.
	onDisk := func() (map[string]int, error) {
		counts := map[string]int{}
		for i := range n {
			path := filepath.Join(env.StateDir, benchtasks.IdleName(i)+".conf")
			data, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				counts["none"]++
				continue
			}
			if err != nil {
				return nil, err
			}
			m, err := message.Unmarshal(data)
			v, _ := m["v"].(string)
			if err != nil || m["pad"] != strings.Repeat(v, 50) {
				return nil, fmt.Errorf("%s is not a whole config: %q (%v)", path, data, err)
			}
			counts[v]++
		}
		return counts, nil
	}
	d := env.StartDaemon("-p", "Bench")
	env.Configure(batch("a"))
	env.Eventually(wait, func() error {
		c, err := onDisk()
		if err != nil {
			t.Fatal(err)
		}
		if c["a"] != n {
			return fmt.Errorf("configs saved: %v, want %d of version a", c, n)
		}
		return nil
	})
	// The second batch: kill at its first sign on disk, a temporary
	// file being written or a new file in place.
	env.Configure(batch("b"))
	temps := 0
	env.Eventually(wait, func() error {
		names, err := filepath.Glob(filepath.Join(env.StateDir, ".Idle*.conf.tmp-*"))
		if err != nil {
			t.Fatal(err)
		}
		if temps = len(names); temps > 0 {
			return nil
		}
		c, err := onDisk()
		if err != nil {
			t.Fatal(err)
		}
		if c["b"] == 0 {
			return errors.New("no config of version b yet")
		}
		return nil
	})
	d.Kill()
	c, err := onDisk()
	if err != nil {
		t.Fatalf("after SIGKILL: %v", err)
	}
	if c["none"] > 0 {
		t.Fatalf("after SIGKILL: %d config files gone (%v)", c["none"], c)
	}
	t.Logf("killed with %d temporary files seen, %d configs of the new batch in place, %d of the old", temps, c["b"], c["a"])
	all, err := env.Store().LoadAllConfigs()
	if err != nil || errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("LoadAllConfigs after SIGKILL: %v", err)
	}
	if len(all) < n {
		t.Fatalf("LoadAllConfigs after SIGKILL: %d configs, want at least %d", len(all), n)
	}
}
