// Package version describes the running multimodule binary: its version,
// the commit it was built from and the Go toolchain, from the build
// information the Go linker embeds (runtime/debug.ReadBuildInfo). A
// release build may set Version (and Revision) with
//
//	go build -trimpath -ldflags "-X github.com/multimodule/multimodule/internal/version.Version=v1.2.0" ./cmd/multimodule
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version and Revision, when set with -ldflags -X, take precedence over
// what the build information says.
var (
	Version  string
	Revision string
)

// Info is what String prints.
type Info struct {
	Version   string // the release version, the module's version, or "devel"
	Module    string // the main module's path
	Revision  string // the VCS commit, "" when unknown
	Time      string // the commit's time (RFC 3339), "" when unknown
	Modified  bool   // the work tree had uncommitted changes
	GoVersion string // the toolchain that built the binary
	Platform  string // GOOS/GOARCH
}

// Get returns this binary's Info.
func Get() Info {
	info := Info{Version: "devel", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info = fromBuildInfo(info, bi)
	}
	if Version != "" {
		info.Version = Version
	}
	if Revision != "" {
		info.Revision = Revision
	}
	return info
}

// fromBuildInfo fills info from bi.
func fromBuildInfo(info Info, bi *debug.BuildInfo) Info {
	info.Module = bi.Main.Path
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		info.Version = v
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the --version output:
//
//	multimodule v1.2.0
//	module    github.com/multimodule/multimodule
//	revision  0473911c… (2026-12-07T17:50:02Z)
//	go        go1.26.8 linux/amd64
//
// The revision line says "modified" when the work tree had uncommitted
// changes and "unknown" when the build recorded no VCS information.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "multimodule %s\n", i.Version)
	if i.Module != "" {
		fmt.Fprintf(&b, "module    %s\n", i.Module)
	}
	rev := i.Revision
	if rev == "" {
		rev = "unknown"
	}
	var notes []string
	if i.Time != "" {
		notes = append(notes, i.Time)
	}
	if i.Modified {
		notes = append(notes, "modified")
	}
	if len(notes) > 0 {
		rev += " (" + strings.Join(notes, ", ") + ")"
	}
	fmt.Fprintf(&b, "revision  %s\n", rev)
	fmt.Fprintf(&b, "go        %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}
