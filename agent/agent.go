// Package agent is the machine agent: the supervisor that runs inside each
// browser machine (a sandbox of local processes, later a VM). It starts Xvnc
// and Chromium as its children, serves the agent API (package agentproto
// defines it) behind a per-machine Bearer token, runs providers' logins and
// hands their credential files over once, and serves the demo provider's
// sign-in page to its browser through DevTools (no socket: see
// LocalOrigin). It exits with an *ExitError when Xvnc or Chromium exits,
// so that the driver sees the machine as gone.
//
// A login runs the provider's recipe (see mc.Provider): its seed files and
// env, its command under a wide pseudo-terminal with BROWSER and an xdg-open
// first on PATH that reach this agent (the opener: mc-agent under another
// name, through a Unix socket in the machine's TMPDIR) and open the URL in
// the visible tab; answers to its prompts, the printed URL to open, the
// paste-back fallback and the stdout capture. Its status carries the phase
// (starting_cli, waiting_for_user, completing, captured) and, when it
// fails, a reason (login_timeout, login_command_failed,
// credentials_missing, browser_error, login_cancelled) with the command's
// last lines, redacted.
package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/master-controller/mc/rfb"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/atomicfile"
	"github.com/master-controller/mc/internal/confine"
)

// Config is the agent's configuration, one field per command-line flag.
type Config struct {
	// Listen is the agent API's address (IP:8080 in a namespace, or
	// 127.0.0.1:PORT in loopback mode), or "unix:" and a socket path
	// (mc.ParseEndpoint), which the agent makes 0600.
	Listen string
	// TokenFile holds the per-machine agent token.
	TokenFile string
	// VNCListen is where Xvnc listens: IP:PORT, or "unix:" and a socket
	// path (0600, and no TCP port at all).
	VNCListen string
	// VNCPasswordFile holds the plaintext VNC password; the agent writes the
	// obfuscated file that Xvnc reads beside it (same name + ".vnc").
	VNCPasswordFile string
	// Display is the X display number.
	Display int
	// Home is the private home directory; the Chromium profile is
	// Home/chromium-profile.
	Home string
	// TmpDir is TMPDIR of Chromium and of login commands (default Home/tmp).
	// Chromium binds its singleton Unix socket below it
	// (TmpDir/org.chromium.Chromium.XXXXXX/SingletonSocket), and a Unix
	// socket path holds at most 107 bytes, so TmpDir may be at most
	// MaxTmpDirLen bytes long; the agent creates it (0700) if missing and
	// refuses one that other users can enter. Xvnc's own sockets and lock
	// files are in /tmp/.X11-unix and /tmp, whatever TmpDir is.
	TmpDir string
	// BrowserHome and BrowserTmpDir are Chromium's HOME (its profile is
	// BrowserHome/chromium-profile) and TMPDIR (default Home and TmpDir).
	// With a launcher they belong to the browser's uid, made by the
	// machine's init.
	BrowserHome, BrowserTmpDir string
	// XAuthFile is the X authority file (default VNCPasswordFile +
	// ".xauth"); with a launcher it is readable by the browser's uid.
	XAuthFile string
	// Launcher, when set, starts Chromium under the browser's uid (the
	// machine's init does; see confine.Launcher): the agent's own uid
	// cannot.
	Launcher *confine.Launcher
	// CLIDir holds the provider CLIs (claude, codex, gemini); login commands
	// find them on their PATH, after the opener's shims.
	CLIDir string
	// TestTrustSPKI is for tests only: the base64 SHA-256 of a test
	// certificate's public key that Chromium accepts without a trusted CA
	// (a stand-in provider's). Empty in every real machine.
	TestTrustSPKI string
	// StartURL is the first page; "local:/path" is a local page (served
	// through the browser's DevTools, see LocalOrigin).
	StartURL string
	// Width and Height are the screen geometry (default 1280×800).
	Width, Height int
	// Xvnc and Chromium are the binaries (default: found in PATH; Chromium
	// "" or "chromium" is Debian's browser binary itself when it is
	// installed, see debianChromium).
	Xvnc, Chromium string
	// StartTimeout bounds the start of Xvnc and of Chromium, each
	// (default 30 s).
	StartTimeout time.Duration
}

// Check fills in defaults and validates cfg. Run calls it too.
func (cfg *Config) Check() error {
	if cfg.Width == 0 && cfg.Height == 0 {
		cfg.Width, cfg.Height = 1280, 800
	}
	if cfg.Xvnc == "" {
		cfg.Xvnc = "Xvnc"
	}
	if cfg.Chromium == "" || cfg.Chromium == "chromium" {
		cfg.Chromium = "chromium"
		if _, err := os.Stat(debianChromium); err == nil {
			cfg.Chromium = debianChromium
		}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	var missing []string
	for name, v := range map[string]string{
		"--listen": cfg.Listen, "--token-file": cfg.TokenFile, "--vnc-listen": cfg.VNCListen,
		"--vnc-password-file": cfg.VNCPasswordFile, "--home": cfg.Home,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing flags: %s", strings.Join(missing, ", "))
	}
	if cfg.Display <= 0 {
		return errors.New("--display must be positive")
	}
	if cfg.Width < 64 || cfg.Height < 64 || cfg.Width > 8192 || cfg.Height > 8192 {
		return fmt.Errorf("geometry %dx%d out of range", cfg.Width, cfg.Height)
	}
	for flag, v := range map[string]string{"--vnc-listen": cfg.VNCListen, "--listen": cfg.Listen} {
		ep := mc.ParseEndpoint(v)
		if ep.Network == "unix" {
			if !filepath.IsAbs(ep.Address) || len(ep.Address) > 107 {
				return fmt.Errorf("%s %s: want an absolute socket path of at most 107 bytes", flag, v)
			}
		} else if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("%s %s: %w", flag, v, err)
		}
	}
	home, err := filepath.Abs(cfg.Home)
	if err != nil {
		return err
	}
	cfg.Home = home
	if cfg.TmpDir == "" {
		cfg.TmpDir = filepath.Join(cfg.Home, "tmp")
	}
	if cfg.TmpDir, err = filepath.Abs(cfg.TmpDir); err != nil {
		return err
	}
	if cfg.BrowserHome == "" {
		cfg.BrowserHome = cfg.Home
	}
	if cfg.BrowserTmpDir == "" {
		cfg.BrowserTmpDir = cfg.TmpDir
	}
	if cfg.XAuthFile == "" {
		cfg.XAuthFile = cfg.VNCPasswordFile + ".xauth"
	}
	if n := len(cfg.BrowserTmpDir); n > MaxTmpDirLen && cfg.BrowserTmpDir != cfg.TmpDir {
		return fmt.Errorf("--browser-tmp-dir %s is %d bytes long, more than %d: Chromium's singleton socket below it "+
			"would exceed a Unix socket path's 107 bytes", cfg.BrowserTmpDir, n, MaxTmpDirLen)
	}
	if n := len(cfg.TmpDir); n > MaxTmpDirLen {
		return fmt.Errorf("--tmp-dir %s is %d bytes long, more than %d: Chromium's singleton socket below it "+
			"(%s) would exceed a Unix socket path's 107 bytes; pass a shorter --tmp-dir", cfg.TmpDir, n, MaxTmpDirLen, singletonSocketTail)
	}
	return nil
}

// singletonSocketTail is the path that Chromium 156 binds its singleton
// socket at below TMPDIR (XXXXXX: six random characters).
const singletonSocketTail = "/org.chromium.Chromium.XXXXXX/SingletonSocket"

// MaxTmpDirLen is the longest TmpDir: a Unix socket path (sun_path, 108
// bytes with its terminating NUL) holds at most 107 bytes.
const MaxTmpDirLen = 107 - len(singletonSocketTail)

// ParseGeometry parses "WxH".
func ParseGeometry(s string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(s, "x")
	if ok {
		w, err = strconv.Atoi(ws)
		if err == nil {
			h, err = strconv.Atoi(hs)
		}
	}
	if !ok || err != nil || w <= 0 || h <= 0 {
		return 0, 0, fmt.Errorf("geometry %q: want WxH", s)
	}
	return w, h, nil
}

// ExitError says a supervised child exited while the agent was running.
type ExitError struct {
	Proc string
	Err  error
}

// Error implements error.
func (e *ExitError) Error() string {
	if e.Err == nil {
		return e.Proc + " exited unexpectedly with status 0"
	}
	return fmt.Sprintf("%s exited unexpectedly: %v", e.Proc, e.Err)
}

// Unwrap returns the exit error.
func (e *ExitError) Unwrap() error { return e.Err }

// readSecretFile reads a one-line secret file.
func readSecretFile(path string) (mc.Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return mc.Secret{}, fmt.Errorf("read secret file %s: %w", path, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(s) == "" {
		return mc.Secret{}, fmt.Errorf("read secret file %s: empty", path)
	}
	return mc.SecretOf(s), nil
}

// checkPrivateDir makes sure dir is a directory (not a symbolic link) of
// this user that no other user can enter: a TMPDIR in a shared place such as
// /tmp must not be another user's.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check tmp dir %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("check tmp dir %s: not a directory", dir)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("check tmp dir %s: owned by uid %d, not by this user", dir, st.Uid)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("check tmp dir %s: mode %v, want 0700", dir, fi.Mode().Perm())
	}
	return nil
}

// chromiumBrowser opens pages through Chromium's DevTools protocol, once
// Chromium runs and has opened the start URL (started is closed): a page
// opened before could be replaced by the start page, and a login would
// not find the start page shown.
type chromiumBrowser struct {
	cdp     *atomic.Pointer[cdp]
	started <-chan struct{}
}

// client returns the DevTools client once the start URL is open.
func (b chromiumBrowser) client(ctx context.Context) (*cdp, error) {
	c := b.cdp.Load()
	if c == nil {
		return nil, errNoBrowser
	}
	select {
	case <-b.started:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the start page: %w", ctx.Err())
	}
}

// errNoBrowser says that Chromium has not started (yet).
var errNoBrowser = errors.New("the browser is not running")

func (b chromiumBrowser) Open(ctx context.Context, url string) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	return c.Navigate(ctx, url)
}

// Sandbox reads the browser's chrome://sandbox (cdp.Sandbox).
func (b chromiumBrowser) Sandbox(ctx context.Context) (proto.BrowserSandbox, error) {
	c, err := b.client(ctx)
	if err != nil {
		return proto.BrowserSandbox{}, err
	}
	return c.Sandbox(ctx)
}

// TabURLs lists the URLs of the browser's pages.
func (b chromiumBrowser) TabURLs(ctx context.Context) ([]string, error) {
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	ts, err := c.Targets(ctx)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, t := range ts {
		if t.isTab() {
			urls = append(urls, t.URL)
		}
	}
	return urls, nil
}

// closer is one step of shutdown, run in reverse order of creation.
type closer struct {
	name string
	fn   func()
}

// Run runs the agent until ctx ends (then it stops its children and returns
// nil) or until Xvnc or Chromium exits (then it returns an *ExitError).
// Every other error is a failure to start.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Check(); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	t0 := time.Now()
	token, err := readSecretFile(cfg.TokenFile)
	if err != nil {
		return err
	}
	vncPassword, err := readSecretFile(cfg.VNCPasswordFile)
	if err != nil {
		return err
	}

	var closers []closer
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			c := closers[i]
			c.fn()
			log.Debug("closed", "what", c.name)
		}
	}()
	// Last of all: processes of the machine outside the agent's process
	// group (Chromium's crash handler), which the driver's group kill
	// misses.
	closers = append(closers, closer{"stray processes", func() {
		if pids := killStrays(cfg.Home); len(pids) > 0 {
			log.Debug("killed processes outside the group", "pids", pids)
		}
	}})

	// TMPDIR (default inside home) holds Chromium's singleton socket
	// directory and any temporary file of a login.
	dirs := []string{cfg.Home, cfg.TmpDir}
	if cfg.Launcher == nil { // else the browser's, made by init
		dirs = append(dirs, filepath.Join(cfg.BrowserHome, "chromium-profile"), cfg.BrowserTmpDir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create home %s: %w", d, err)
		}
	}
	if err := checkPrivateDir(cfg.TmpDir); err != nil {
		return err
	}
	passwdFile := cfg.VNCPasswordFile + ".vnc"
	if err := writeVNCPasswordFile(passwdFile, vncPassword.Reveal()); err != nil {
		return err
	}
	closers = append(closers, closer{"vnc password file", func() { os.Remove(passwdFile) }})
	authFile := cfg.XAuthFile
	authMode := os.FileMode(0o600)
	if cfg.Launcher != nil {
		authMode = 0o644 // the browser's uid reads it; only this machine sees it
	}
	if err := atomicfile.Write(authFile, xauthority(cfg.Display, newCookie()), authMode); err != nil {
		return fmt.Errorf("write x authority %s: %w", authFile, err)
	}
	closers = append(closers, closer{"x authority file", func() { os.Remove(authFile) }})

	if err := confine.LoopbackUp(); err != nil {
		return err
	}
	apiLn, err := listen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen agent api %s: %w", cfg.Listen, err)
	}
	startURL := "about:blank"
	if cfg.StartURL != "" {
		if startURL, err = resolveURL(cfg.StartURL, LocalOrigin); err != nil {
			apiLn.Close()
			return fmt.Errorf("--start-url: %w", err)
		}
	}

	// The servers start before the children exist; handlers read them
	// through these pointers.
	var xvncP, chromiumP atomic.Pointer[child]
	var devtoolsP atomic.Pointer[cdp]
	startOpened := make(chan struct{})
	browser := chromiumBrowser{cdp: &devtoolsP, started: startOpened}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable (the login commands' opener): %w", err)
	}
	lg := newLogin(loginConfig{home: cfg.Home, tmpDir: cfg.TmpDir, pageBase: LocalOrigin, display: cfg.Display,
		cliDir: cfg.CLIDir, openerExe: exe}, browser, log)
	closers = append(closers, closer{"login", lg.Close})
	vnc := mc.ParseEndpoint(cfg.VNCListen)
	up, stopWaits := make(chan struct{}), make(chan struct{})
	a := &api{
		up:        up,
		stop:      stopWaits,
		tokenHash: sha256.Sum256([]byte(token.Reveal())),
		log:       log,
		browser:   browser,
		sandbox:   browser.Sandbox,
		pageBase:  LocalOrigin,
		login:     lg,
		ready: func() bool {
			x, c := xvncP.Load(), chromiumP.Load()
			return x != nil && c != nil && x.Alive() && c.Alive()
		},
		health: func(ctx context.Context) proto.Health {
			var h proto.Health
			if x := xvncP.Load(); x != nil && x.Alive() {
				h.VNC = rfb.Probe(ctx, vnc) == nil
			}
			if c, d := chromiumP.Load(), devtoolsP.Load(); c != nil && d != nil && c.Alive() {
				_, err := d.Version(ctx)
				h.Browser = err == nil
			}
			return h
		},
	}
	apiSrv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = apiSrv.Serve(apiLn) }()
	closers = append(closers, closer{"agent api server", func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = apiSrv.Shutdown(sctx)
	}})
	// Before the server's shutdown: it waits for the requests in flight.
	closers = append(closers, closer{"health waits", func() { close(stopWaits) }})

	sctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	xvnc, err := startXvnc(sctx, log, cfg, passwdFile, authFile)
	cancel()
	if err != nil {
		return stoppedOr(ctx, log, err)
	}
	xvncP.Store(xvnc)
	closers = append(closers, closer{"xvnc", func() {
		xvnc.Stop(log, 3*time.Second)
		removeStaleXFiles(cfg.Display, xvnc.pid)
	}})
	tX := time.Since(t0)

	sctx, cancel = context.WithTimeout(ctx, cfg.StartTimeout)
	tC0 := time.Now()
	chromium, devtools, err := startChromium(sctx, log, cfg, authFile)
	cancel()
	if err != nil {
		return stoppedOr(ctx, log, err)
	}
	tC := time.Since(tC0)
	closers = append(closers, closer{"chromium", func() {
		chromium.Stop(log, 3*time.Second)
		devtools.Close()
	}})
	// The machine is ready once the browser answers. The local pages
	// (served through DevTools) and then the start page come after, in the
	// background, as a page given on the command line would load: Chromium
	// starts on about:blank, so no page asks for a local page before they
	// are served, and the browser's users wait for the start page
	// (chromiumBrowser). Enabling the local pages took 20–90 ms of a start
	// (measured on a quiet host) that no user has to wait for.
	browserCtx, stopBrowser := context.WithCancel(ctx)
	closers = append(closers, closer{"local pages and window watch", stopBrowser})
	pagesFailed := make(chan error, 1)
	go func() {
		defer close(startOpened)
		if err := serveLocalPages(browserCtx, devtools, pageHandler(cfg.Home, log), log); err != nil {
			pagesFailed <- err
			return
		}
		if startURL != "about:blank" {
			openStartURL(browserCtx, log, devtools, startURL)
		}
	}()
	devtoolsP.Store(devtools)
	chromiumP.Store(chromium)
	close(up)
	go func() {
		if err := devtools.KeepOneWindow(browserCtx, log); err != nil && browserCtx.Err() == nil {
			log.Warn("watch browser windows", mc.LogError, err)
		}
	}()
	log.Info("machine agent ready", "listen", apiLn.Addr().String(), "vnc", cfg.VNCListen, "display", cfg.Display,
		"xvnc_ms", tX.Milliseconds(), "chromium_ms", tC.Milliseconds(), "ready_ms", time.Since(t0).Milliseconds())

	select {
	case <-ctx.Done():
		log.Info("machine agent stopping")
		return nil
	case <-xvnc.Exited:
		log.Error("xvnc exited", mc.LogError, xvnc.Err, mc.LogReason, mc.ReasonMachineExited)
		return &ExitError{Proc: "xvnc", Err: xvnc.Err}
	case <-chromium.Exited:
		log.Error("chromium exited", mc.LogError, chromium.Err, mc.LogReason, mc.ReasonMachineExited)
		return &ExitError{Proc: "chromium", Err: chromium.Err}
	case err := <-pagesFailed:
		return stoppedOr(ctx, log, err)
	}
}

// startPageTimeout bounds the wait for the start page at start.
const startPageTimeout = 15 * time.Second

// openStartURL shows the start URL in the browser's tab and waits, at most
// startPageTimeout, until the tab shows it (Page.navigate answers before
// the tab commits to the page), so that the first login finds it there. A page that fails or is slow to load is the user's
// to see (a provider offline): it is logged, and the start goes on; a
// browser that died is seen by the caller.
func openStartURL(ctx context.Context, log *slog.Logger, devtools *cdp, startURL string) {
	ctx, cancel := context.WithTimeout(ctx, startPageTimeout)
	defer cancel()
	err := devtools.Navigate(ctx, startURL)
	if err == nil {
		err = devtools.waitTab(ctx, startURL)
	}
	if err != nil {
		log.Warn("open start url", "url", redactURL(startURL), mc.LogError, err)
	}
}

// stoppedOr returns nil when ctx ended (the agent was told to stop while
// starting), else err.
func stoppedOr(ctx context.Context, log *slog.Logger, err error) error {
	if ctx.Err() != nil {
		log.Info("machine agent stopped while starting")
		return nil
	}
	return err
}

// listen listens on addr: a TCP address, or "unix:" and a socket path that
// only this user may connect to (0600, created under a umask that never
// lets it be more open, even for a moment).
func listen(addr string) (net.Listener, error) {
	ep := mc.ParseEndpoint(addr)
	if ep.Network != "unix" {
		return net.Listen("tcp", addr)
	}
	if err := os.Remove(ep.Address); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", ep.Address)
	syscall.Umask(old)
	return ln, err
}
