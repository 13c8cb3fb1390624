package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/mmtest"
)

// The commands of docs/deploy.md that build and check a binary.

const versionPkg = "github.com/multimodule/multimodule/internal/version"

// moduleRoot is the checkout this test runs in.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func needGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
}

// run runs argv in dir with extra environment and returns its output.
func run(t *testing.T, dir string, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s (in %s): %v\n%s", strings.Join(argv, " "), dir, err, out)
	}
	return string(out)
}

// TestReleaseBuild builds a release binary as docs/deploy.md says (with
// -trimpath, the version and the revision set by -ldflags -X), checks
// that `multimodule --version` reports them with the Go version, that no
// path of the build machine is in the binary, and that the systemd unit
// of contrib/systemd passes `systemd-analyze verify` with that binary.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short mode")
	}
	needGit(t)
	root := moduleRoot(t)
	rev := strings.TrimSpace(run(t, root, nil, "git", "rev-parse", "HEAD"))
	exe := filepath.Join(t.TempDir(), "multimodule")
	build := mmtest.DocCommand(t, filepath.Join(root, "docs/deploy.md"), "go build -trimpath")
	for _, want := range []string{"-X " + versionPkg + ".Version=v1.2.0", "-X " + versionPkg + ".Revision=$(git rev-parse HEAD)", " -o multimodule ./cmd/multimodule"} {
		if !strings.Contains(build, want) {
			t.Fatalf("docs/deploy.md's build command %q lacks %q", build, want)
		}
	}
	run(t, root, nil, "sh", "-c", strings.Replace(build, " -o multimodule ", " -o "+exe+" ", 1))

	out := run(t, root, nil, exe, "--version")
	for _, want := range []string{
		"multimodule v1.2.0\n",
		"module    github.com/multimodule/multimodule\n",
		"revision  " + rev,
		"go        " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--version output lacks %q:\n%s", want, out)
		}
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bin, []byte(root+"/")) {
		t.Errorf("the -trimpath binary contains the build directory %s", root)
	}

	t.Run("systemd unit verifies", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed (apt-get install systemd)")
		}
		unit, err := os.ReadFile(filepath.Join(root, "contrib/systemd/multimodule.service"))
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart's program exists: use this build.
		text := strings.ReplaceAll(string(unit), "/usr/local/bin/multimodule", exe)
		path := filepath.Join(t.TempDir(), "multimodule.service")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(analyze, "verify", path)
		got, err := cmd.CombinedOutput()
		// verify exits 0 on unknown keys and bad values, which it only
		// prints: any output is a finding.
		if err != nil || len(bytes.TrimSpace(got)) > 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, got)
		}
		for _, want := range []string{"Type=notify\n", "ExecReload=/bin/kill -HUP $MAINPID\n", "KillMode=process\n", "WatchdogSec="} {
			if !strings.Contains(text, want) {
				t.Errorf("the unit lacks %q", want)
			}
		}
	})
}

// TestInstallFromClone: `git clone` then `go install ./cmd/multimodule`,
// as docs/deploy.md says (the module path is not on a proxy): the
// binary's --version names the commit, from the build information Go
// stamps (-buildvcs, on by default). It builds what is committed.
func TestInstallFromClone(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped in -short mode")
	}
	needGit(t)
	root := moduleRoot(t)
	docs := filepath.Join(root, "docs/deploy.md")
	dir := t.TempDir()
	src := filepath.Join(dir, "multimodule")
	clone := mmtest.DocCommand(t, docs, "git clone <repository> multimodule")
	run(t, dir, nil, "sh", "-c", strings.Replace(clone, "<repository>", root, 1))
	rev := strings.TrimSpace(run(t, src, nil, "git", "rev-parse", "HEAD"))
	bin := filepath.Join(dir, "bin")
	// The default -buildvcs, whatever this machine's go env says.
	run(t, src, []string{"GOBIN=" + bin, "GOFLAGS=-buildvcs=auto"}, "sh", "-c", mmtest.DocCommand(t, docs, "go install ./cmd/multimodule"))

	out := run(t, dir, nil, filepath.Join(bin, "multimodule"), "--version")
	first, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "multimodule v0.0.0-") || !strings.Contains(first, rev[:12]) {
		t.Errorf("version line %q: want the pseudo-version of commit %s", first, rev[:12])
	}
	if !strings.Contains(out, "revision  "+rev+" (") || strings.Contains(out, "modified") {
		t.Errorf("--version output lacks revision %s (its time, not modified):\n%s", rev, out)
	}
}
