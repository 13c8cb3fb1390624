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
	"github.com/chromedp/chromedp/kb"

	"github.com/multimodule/multimodule/mmtest"
)

// ScreenshotsEnv names the directory the dashboard tests save their
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

// browserPage is a headless Chromium tab that remembers every error the
// page logs (console.error, uncaught exceptions, failed loads).
type browserPage struct {
	t     *testing.T
	ctx   context.Context
	shots string
	mu    sync.Mutex
	errs  []string
}

// newBrowserPage starts Chromium; it is stopped when the test ends.
func newBrowserPage(t *testing.T) *browserPage {
	browser := chromium(t)
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
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	// The browser starts with the first Run, on a context without a
	// timeout (it lives as long as that context); the console is read
	// from then on.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(cancel)
	p := &browserPage{t: t, ctx: ctx, shots: shots}
	go func() {
		for m, err := range chromedp.Console(bctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				p.mu.Lock()
				p.errs = append(p.errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// run runs the actions of one step; a failure names the step.
func (p *browserPage) run(step string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.t.Fatalf("%s: %v (JavaScript errors: %v)", step, err, p.errs)
	}
}

// shot saves a screenshot of the whole page as name.
func (p *browserPage) shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		buf, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		path := filepath.Join(p.shots, name)
		p.t.Logf("screenshot %s", path)
		return os.WriteFile(path, buf, 0o644)
	})
}

// noErrors fails the test if the page logged an error.
func (p *browserPage) noErrors() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) > 0 {
		p.t.Fatalf("the page logged JavaScript errors:\n%s", strings.Join(p.errs, "\n"))
	}
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// TestDashboard loads the web dashboard of a daemon running the tutorial
// in headless Chromium, failsafes Example1 by clicking (giving the token
// and confirming), sees its row change and the alert appear, unfailsafes
// it, and fails on any JavaScript error. Screenshots go to
// $MULTIMODULE_SCREENSHOTS.
func TestDashboard(t *testing.T) {
	p := newBrowserPage(t)
	env := mmtest.NewEnv(t)
	d, base := startHTTPDaemon(t, env)
	d.WaitOutput(t, `received a message: 1 \(howdy\)`, wait)

	row := `tr[data-task="Example1"]`
	p.run("load the page",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(css(`tr[data-task="Example2"]`)),
		chromedp.WaitVisible(css(row+`[data-state="running"]`)),
		// a few samples for the sparklines
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`document.querySelectorAll('svg.spark polyline').length > 0`, chromedp.WithPollingTimeout(wait))(ctx, tg)
			return err
		}),
		// the page draws the daemon's rate history, continued by its own
		// samples after it: 3 points of history and 1 live rate
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			n, err := chromedp.Evaluate[int](`sparkline({step_s: 10, end: 1000, per_sec: [1, 2, 3]}, [[990, 5], [1000, 50], [1002, 60]])[0].querySelector("polyline").getAttribute("points").split(" ").length`)(ctx, tg)
			if err == nil && n != 4 {
				err = fmt.Errorf("the sparkline of 3 rates of history and 1 live has %d points, want 4", n)
			}
			return err
		}),
		p.shot("dashboard.png"),
	)
	p.run("failsafe Example1: the page asks for the token, then for confirmation",
		chromedp.Click(css(row+` button`)),
		chromedp.WaitVisible(css(`#token-dialog[open] #token-input`)),
		chromedp.SendKeys(css(`#token-input`), busToken(t, env)),
		chromedp.Click(css(`#token-save`)),
		chromedp.WaitVisible(css(`#confirm-dialog[open] #confirm-ok`)),
		p.shot("confirm.png"),
		chromedp.Click(css(`#confirm-ok`)),
		chromedp.WaitVisible(css(row+`[data-state="failsafed"]`)),
		chromedp.WaitVisible(css(`#alerts li[data-task="Example1"][data-level="failsafe"]`)),
		p.shot("failsafed.png"),
	)
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs == nil {
		t.Fatal("the page showed Example1 failsafed, but it has no failsafe file")
	}
	p.run("unfailsafe Example1",
		chromedp.Click(css(row+` button`)),
		chromedp.WaitVisible(css(`#confirm-dialog[open] #confirm-ok`)),
		chromedp.Click(css(`#confirm-ok`)),
		chromedp.WaitVisible(css(row+`[data-state="running"]`)),
		chromedp.WaitVisible(css(`#alerts li[data-task="Example1"][data-level="ok"]`)),
		p.shot("unfailsafed.png"),
	)
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs != nil {
		t.Fatalf("unfailsafed on the page, but the failsafe file remains: %v", fs)
	}
	p.run("the keyboard: Enter on a task's button asks, Escape cancels",
		chromedp.Focus(css(row+` button`)),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(css(`#confirm-dialog[open] #confirm-ok`)),
		chromedp.KeyEvent(kb.Escape),
		chromedp.WaitNotPresent(css(`#confirm-dialog[open]`)),
	)
	if fs, _ := env.Store().ReadFailsafe("Example1"); fs != nil {
		t.Fatalf("a cancelled confirmation failsafed Example1: %v", fs)
	}
	p.run("a phone's screen",
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.WaitVisible(css(row)),
		p.shot("phone.png"),
	)
	p.noErrors()
}

// TestDashboardTokenForReads: on a listener that needs the token to be
// read (a non-loopback address with --http-token), the page says so,
// and once the token is given it shows the tasks and the alerts kept.
func TestDashboardTokenForReads(t *testing.T) {
	p := newBrowserPage(t)
	env := mmtest.NewEnv(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("read-me-too\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := env.StartDaemon("-p", "MultiModuleTest", "-c", tutorialPath(t), "--http", "0.0.0.0:0", "--http-token", tokFile)
	d.WaitOutput(t, `received a message: 1 \(howdy\)`, wait)
	info := httpInfo(t, env)
	_, port, _ := strings.Cut(info.Addr, "]:")
	if port == "" {
		_, port, _ = strings.Cut(info.Addr, ":")
	}
	// An alert from before the page was opened.
	env.Run("failsafe", "Example2", "--reason", "before the page")

	p.run("load the page: it needs the token",
		chromedp.Navigate("http://127.0.0.1:"+port+"/"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`document.getElementById('notice').textContent.includes('needs the token')`, chromedp.WithPollingTimeout(wait))(ctx, tg)
			return err
		}),
		p.shot("token-needed.png"),
		chromedp.Click(css(`#token-button`)),
		chromedp.WaitVisible(css(`#token-dialog[open] #token-input`)),
		chromedp.SendKeys(css(`#token-input`), "read-me-too"),
		chromedp.Click(css(`#token-save`)),
		chromedp.WaitVisible(css(`tr[data-task="Example1"][data-state="running"]`)),
		chromedp.WaitVisible(css(`tr[data-task="Example2"][data-state="failsafed"]`)),
		chromedp.WaitVisible(css(`#alerts li[data-task="Example2"][data-level="failsafe"]`)),
		p.shot("token-given.png"),
	)
	// The 401s before the token was given are the browser's "failed to
	// load resource" errors, which the page expects; nothing else.
	p.mu.Lock()
	var others []string
	for _, e := range p.errs {
		if !strings.Contains(e, "status of 401") {
			others = append(others, e)
		}
	}
	p.errs = others
	p.mu.Unlock()
	p.noErrors()
}
