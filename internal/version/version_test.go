package version

import (
	"runtime/debug"
	"testing"
)

// TestString: what --version prints from the build information, and
// what -ldflags -X overrides.
func TestString(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/multimodule/multimodule", Version: "v0.0.0-20261207181439-43f92a1166cb+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "43f92a1166cbe458fd67eacca8710a4a6d87fb44"},
			{Key: "vcs.time", Value: "2026-12-07T18:14:39Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := fromBuildInfo(Info{Version: "devel", Platform: "linux/amd64"}, bi).String()
	want := "multimodule v0.0.0-20261207181439-43f92a1166cb+dirty\n" +
		"module    github.com/multimodule/multimodule\n" +
		"revision  43f92a1166cbe458fd67eacca8710a4a6d87fb44 (2026-12-07T18:14:39Z, modified)\n" +
		"go        go1.26.8 linux/amd64\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	// No VCS, version (devel): what go run and builds outside a checkout give.
	got = fromBuildInfo(Info{Version: "devel", Platform: "linux/amd64"}, &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "m", Version: "(devel)"}}).String()
	want = "multimodule devel\nmodule    m\nrevision  unknown\ngo        go1.26.8 linux/amd64\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestLdflags: Version and Revision set by -X win.
func TestLdflags(t *testing.T) {
	Version, Revision = "v1.2.0", "abc"
	defer func() { Version, Revision = "", "" }()
	i := Get()
	if i.Version != "v1.2.0" || i.Revision != "abc" {
		t.Fatalf("Get() = %+v, want the -X values", i)
	}
}
