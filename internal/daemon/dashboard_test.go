package daemon_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/multimodule/multimodule/mmtest"
)

// ScreenshotsEnv names the directory the dashboard test saves its
// screenshots in (default: the test's temporary directory).
const ScreenshotsEnv = "MULTIMODULE_SCREENSHOTS"

// chromium finds the headless browser; under CI its absence fails the
// test, elsewhere it skips with the reason.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no chromium in PATH: the dashboard test needs it (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
	return ""
}

// TestDashboard loads the web dashboard of a daemon running the tutorial
// in headless Chromium, failsafes Example1 by clicking (giving the token
// and confirming), sees its row change and the alert appear, unfailsafes
// it, and fails on any JavaScript error. Screenshots go to
// $MULTIMODULE_SCREENSHOTS.
func TestDashboard(t *testing.T) {
	browser := chromium(t)
	env := mmtest.NewEnv(t)
	d, base := startHTTPDaemon(t, env)
	d.WaitOutput(t, `received a message: 1 \(howdy\)`, wait)
	shots := os.Getenv(ScreenshotsEnv)
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	// The browser starts with the first Run, on a context without a
	// timeout (it lives as long as that context); the console is read
	// from then on.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var jsErrors []string
	go func() {
		for m, err := range chromedp.Console(bctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				jsErrors = append(jsErrors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			path := filepath.Join(shots, name)
			t.Logf("screenshot %s", path)
			return os.WriteFile(path, buf, 0o644)
		})
	}
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: %v (JavaScript errors: %v)", step, err, jsErrors)
		}
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	row := `tr[data-task="Example1"]`
	run("load the page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(css(`tr[data-task="Example2"]`)),
		chromedp.WaitVisible(css(row+`[data-state="running"]`)),
		// a few samples for the sparklines
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`document.querySelectorAll('svg.spark polyline').length > 0`, chromedp.WithPollingTimeout(wait))(ctx, tg)
			return err
		}),
		shot("dashboard.png"),
	)
	run("failsafe Example1: the page asks for the token, then for confirmation",
		chromedp.Click(css(row+` button`)),
		chromedp.WaitVisible(css(`#token-dialog[open] #token-input`)),
		chromedp.SendKeys(css(`#token-input`), busToken(t, env)),
		chromedp.Click(css(`#token-save`)),
		chromedp.WaitVisible(css(`#confirm-dialog[open] #confirm-ok`)),
		shot("confirm.png"),
		chromedp.Click(css(`#confirm-ok`)),
		chromedp.WaitVisible(css(row+`[data-state="failsafed"]`)),
		chromedp.WaitVisible(css(`#alerts li[data-task="Example1"][data-level="failsafe"]`)),
		shot("failsafed.png"),
	)
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs == nil {
		t.Fatal("the page showed Example1 failsafed, but it has no failsafe file")
	}
	run("unfailsafe Example1",
		chromedp.Click(css(row+` button`)),
		chromedp.WaitVisible(css(`#confirm-dialog[open] #confirm-ok`)),
		chromedp.Click(css(`#confirm-ok`)),
		chromedp.WaitVisible(css(row+`[data-state="running"]`)),
		chromedp.WaitVisible(css(`#alerts li[data-task="Example1"][data-level="ok"]`)),
		shot("unfailsafed.png"),
	)
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs != nil {
		t.Fatalf("unfailsafed on the page, but the failsafe file remains: %v", fs)
	}
	run("a phone's screen",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.WaitVisible(css(row)),
		shot("phone.png"),
	)
	mu.Lock()
	defer mu.Unlock()
	if len(jsErrors) > 0 {
		t.Fatalf("the page logged JavaScript errors:\n%s", strings.Join(jsErrors, "\n"))
	}
}
