package trust_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multimodule/multimodule/trust"
)

// TestDirThroughLinks: a state dir reached through a symbolic link is
// trusted when both where the link lives and where it leads are; a link
// living in a directory others can write (who could point it elsewhere)
// is refused.
func TestDirThroughLinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := trust.Dir("state dir", link); err != nil {
		t.Errorf("Dir(link in a private dir): %v", err)
	}
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	link2 := filepath.Join(shared, "link")
	if err := os.Symlink(real, link2); err != nil {
		t.Fatal(err)
	}
	err := trust.Dir("state dir", link2)
	if !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is inside "+shared+", which is writable by others (mode 0777) without the sticky bit") {
		t.Errorf("Dir(link in a shared dir): got %v, want a refusal naming %s", err, shared)
	}
}

// TestOpenFile: O_NOFOLLOW, regular files only, and the mode check.
func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := trust.ReadFile("state file", file); err != nil || string(data) != "x" {
		t.Errorf("ReadFile(private file): got %q, %v", data, err)
	}
	if err := os.Chmod(file, 0o622); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ReadFile("state file", file); !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "state file "+file+" is writable by others (mode 0622): run chmod 600 "+file) {
		t.Errorf("ReadFile(0622): got %v", err)
	}
	link := filepath.Join(dir, "l")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ReadFile("state file", link); !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("ReadFile(link): got %v", err)
	}
	sub := filepath.Join(dir, "p")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.ReadFile("state file", sub); !errors.Is(err, trust.ErrUntrusted) || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("ReadFile(directory): got %v", err)
	}
	if _, err := trust.ReadFile("state file", filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(missing): got %v, want ErrNotExist", err)
	}
}
