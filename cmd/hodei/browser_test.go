package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A real Chromium (Debian's chromium package) driven over the DevTools
// protocol, for the dashboard's tests.

// browser starts a headless Chromium for the test and returns the
// context of its first tab; the test is skipped when no Chromium is installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("no chromium installed (make deps installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		// The server's certificate chains to the test run's own CA, which
		// is not in Chromium's trust store; TLS itself is proved by the
		// API and CLI tests.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// tab opens a tab in a browser context of its own (own cookies) that
// lives until the test ends.
func tab(t *testing.T, actx context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// browse runs browser steps within timeout, failing the test on error.
func browse(t *testing.T, ctx context.Context, timeout time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		fatalPage(t, ctx, what, err)
	}
}

// value runs one browser action that answers a value.
func value[T any](t *testing.T, ctx context.Context, timeout time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		fatalPage(t, ctx, what, err)
	}
	return v
}

// eval evaluates a JavaScript expression, awaiting it if it is a promise.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	return value(t, ctx, 20*time.Second, "evaluate "+expr, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

func fatalPage(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	page, _ := chromedp.Run(sctx, chromedp.OuterHTML(chromedp.CSS("body")))
	t.Fatalf("%s: %v\npage:\n%.3000s", what, err, page)
}

// shotDir is where screenshots go: HODEI_SCREENSHOTS when set, else
// .ci/artifacts/ui when CI keeps artifacts, else the test's artifact
// directory.
func shotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("HODEI_SCREENSHOTS")
	if dir == "" {
		if fi, err := os.Stat("../../.ci/artifacts"); err == nil && fi.IsDir() {
			dir = "../../.ci/artifacts/ui"
		} else {
			dir = t.ArtifactDir()
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the whole page as dir/name.png.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png := value(t, ctx, 20*time.Second, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

var loginLink = regexp.MustCompile(`(https://\S+/ui/login\?t=[0-9a-f]+)`)

// dashboardLogin returns the one-time sign-in link a `hodei dev` printed.
func dashboardLogin(t *testing.T, p *platformProc) string {
	t.Helper()
	p.waitLog(t, 60*time.Second, "/ui/login?t=")
	m := loginLink.FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("no sign-in link in the log:\n%s", p.logs.String())
	}
	return m[1]
}

// open navigates to url and waits for sel. Navigation starts again
// when Chromium reports a network change: on a machine where containers
// come and go, their interfaces do.
func open(t *testing.T, ctx context.Context, url, sel string) {
	t.Helper()
	for try := 0; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := chromedp.Do(tctx, chromedp.Navigate(url))
		if err == nil {
			err = chromedp.Do(tctx, chromedp.WaitVisible(chromedp.CSS(sel)))
		}
		cancel()
		if err == nil {
			return
		}
		if try == 2 {
			fatalPage(t, ctx, "open "+url, err)
		}
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		state, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`location.href + " " + document.readyState + " " + document.body.dataset.page`))
		scancel()
		t.Logf("open %s: %v (page: %s); again", url, err, state)
	}
}

// signInWithToken signs in on the sign-in page's form with an API token.
func signInWithToken(t *testing.T, ctx context.Context, addr, token string) {
	t.Helper()
	open(t, ctx, "https://"+addr+"/ui/login", "#token")
	browse(t, ctx, 30*time.Second, "sign in with a token", chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS(`body[data-page="jobs"] #jobs`)))
}

// signIn opens a sign-in link and waits for the job list.
func signIn(t *testing.T, ctx context.Context, link string) {
	t.Helper()
	browse(t, ctx, 30*time.Second, "sign in", chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(`body[data-page="jobs"] #jobs`)))
}

// text reads the text of the element sel.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return strings.TrimSpace(value(t, ctx, 10*time.Second, "text of "+sel, chromedp.TextContent(chromedp.CSS(sel))))
}

// waitJS polls a JavaScript expression in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) {
	t.Helper()
	value(t, ctx, timeout, what, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
}
