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
	// The daemon (a child process) registers the bench's scale tasks.
	t.Setenv(benchtasks.ScaleEnv, "1")
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

// TestFailsafeFileByHand: an operator who creates <Task>.failsafe by hand
// stops an internal task (its messages wait in its queue), and deleting
// the file brings it back to drain them in order — the daemon notices
// both from the state directory (store.KeepFailsafeView and the
// supervisor's check), not from a control message.
func TestFailsafeFileByHand(t *testing.T) {
	env := mmtest.NewEnv(t)
	env.StartDaemon("-p", "MultiModuleTest")
	env.Configure(otherModuleConfig(1))
	probe(t, env, 0)
	st := env.Store()
	// The status written at load (after the burst of loads) first: the
	// unload writes it again, which is how the test sees the unload.
	var loaded float64
	env.Eventually(wait, func() error {
		s, err := st.LoadStatus("OtherModule")
		if s == nil {
			return fmt.Errorf("no status of OtherModule yet (%v)", err)
		}
		loaded = s.SaveTS
		return nil
	})
	path := filepath.Join(env.StateDir, "OtherModule.failsafe")
	if err := os.WriteFile(path, []byte(`{"summary": "stopped by hand"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env.Eventually(wait, func() error {
		if s, _ := st.LoadStatus("OtherModule"); s == nil || s.SaveTS <= loaded {
			return errors.New("OtherModule not unloaded yet")
		}
		return nil
	})
	for i := range 3 {
		env.Send("OtherModule", message.Message{"ct": 10 + i})
	}
	env.Eventually(wait, func() error {
		line := statusOf(t, env, "OtherModule")
		if line["failsafed"] != true || line["queue_depth"] != float64(3) {
			return fmt.Errorf("status %v: want failsafed with 3 messages waiting", line)
		}
		return nil
	})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		out := env.Recv("test_out", wait)
		if ct, _ := message.Int(out["ct"]); ct != int64(10+i) {
			t.Fatalf("after the failsafe file was removed: ct %v, want %d (the waiting messages, in order)", out["ct"], 10+i)
		}
	}
}
