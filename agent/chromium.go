package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// chromiumArgs is Chromium's command line: kiosk mode (no browser chrome) in
// a window at the screen's origin and size, so the page fills the whole VNC
// screen (pixel checks and clicks at fixed positions are then reliable);
// DevTools over the pipe on fds 3 and 4 only (--remote-debugging-pipe: no
// TCP port that a page of this or another machine could reach); no
// first-run UI, background traffic, keyring or sync. The name of the local
// pages' origin never resolves (localResolverRule): the agent answers them
// through DevTools, nothing else may. It starts on about:blank, so that the
// agent serves the local pages before any page asks for one.
//
// Chromium keeps its own sandbox (namespaces and seccomp-BPF) on. Only a
// test build of the agent (tag mc_test_no_sandbox, see testUnsandboxedArgs)
// run as root outside a machine (noSandbox) turns it off, because Chromium
// refuses to start as root with it on; the local driver never runs the
// agent as root.
//
// No flag keeps the crash handler in the agent's process group: Chromium 156
// (Debian) always starts chrome_crashpad_handler in a session of its own.
// --disable-breakpad and --disable-crash-reporter do not stop it, and
// --disable-crashpad-for-testing does but makes the network service crash
// ("FD ownership violation"), so that no page loads (all checked with ps and
// a real page). The handler exits by itself within two seconds of its
// browser (measured after a SIGKILL of the group); the agent kills any left
// when it stops (killStrays), and a machine's PID namespace ends with it.
func chromiumArgs(cfg Config, noSandbox, smallShm bool) []string {
	args := []string{
		"--user-data-dir=" + filepath.Join(cfg.BrowserHome, "chromium-profile"),
		"--remote-debugging-pipe",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-gpu",
		"--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider",
		"--disable-session-crashed-bubble",
		"--hide-crash-restore-bubble",
		"--noerrdialogs",
		"--password-store=basic",
		"--force-device-scale-factor=1",
		"--host-resolver-rules=" + localResolverRule,
		// Without a window manager, kiosk mode cannot go full screen, and a
		// window of exactly the screen's size comes out one pixel short in
		// each direction (measured with Chromium 156 on Xvnc): ask for one
		// more, the X server clips it.
		fmt.Sprintf("--window-size=%d,%d", cfg.Width+1, cfg.Height+1),
		"--window-position=0,0",
		"--kiosk",
	}
	if noSandbox {
		args = append(args, testUnsandboxedArgs...)
	}
	if cfg.TestTrustSPKI != "" {
		args = append(args, "--ignore-certificate-errors-spki-list="+cfg.TestTrustSPKI)
	}
	if smallShm {
		// A small /dev/shm (containers, small VMs) crashes renderers.
		args = append(args, "--disable-dev-shm-usage")
	}
	return append(args, "about:blank")
}

// debianChromium is Debian's Chromium binary, which the agent runs rather
// than the launcher script in front of it (/usr/bin/chromium, the
// "chromium" on PATH). The script forks a dozen commands at every start
// (16 ms on a quiet host), exports Google's API keys and adds flags of its
// own (--enable-remote-extensions, --enable-gpu-rasterization, and
// --disable-dev-shm-usage below 3.8 GB of /dev/shm) that a machine does not
// want: the agent sets its flags itself (chromiumArgs).
const debianChromium = "/usr/lib/chromium/chromium"

// shmIsSmall reports whether /dev/shm is missing or smaller than 256 MiB.
func shmIsSmall() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil {
		return true
	}
	return uint64(st.Bsize)*st.Blocks < 256<<20
}

// startChromium starts Chromium on the display with DevTools on a pipe, on
// a blank tab, and returns once the browser answers over it. Its output is not logged (it can
// hold page URLs).
func startChromium(ctx context.Context, log *slog.Logger, cfg Config, authFile string) (*child, *cdp, error) {
	root := os.Geteuid() == 0
	if root && len(testUnsandboxedArgs) == 0 {
		return nil, nil, errors.New("start chromium: the agent runs as root outside a machine, where Chromium cannot keep its sandbox; run it in a machine of the local driver")
	}
	if root {
		log.Warn("test build of the agent runs as root outside a machine: Chromium without its sandbox")
	}
	browserIn, browserOut, devtools, err := cdpPipes()
	if err != nil {
		return nil, nil, fmt.Errorf("start chromium: %w", err)
	}
	var c *child
	if cfg.Launcher != nil {
		var path string
		if path, err = exec.LookPath(cfg.Chromium); err == nil {
			c, err = startBrowserChild(cfg.Launcher, "chromium", append([]string{path}, chromiumArgs(cfg, false, shmIsSmall())...),
				chromiumEnv(cfg, authFile), cfg.BrowserHome, []*os.File{browserIn, browserOut}, nil)
		}
	} else {
		cmd := exec.Command(cfg.Chromium, chromiumArgs(cfg, root, shmIsSmall())...)
		cmd.Dir = cfg.BrowserHome
		cmd.Env = chromiumEnv(cfg, authFile)
		cmd.ExtraFiles = []*os.File{browserIn, browserOut} // fds 3 and 4
		c, err = startChild("chromium", cmd, nil)
	}
	browserIn.Close()
	browserOut.Close()
	if err != nil {
		devtools.Close()
		return nil, nil, fmt.Errorf("start chromium: %w", err)
	}
	// Ready once the browser answers and its first tab exists: a page
	// command before that would open a second window.
	answered := make(chan error, 1)
	go func() { answered <- devtools.waitFirstTab(ctx, nil) }()
	select {
	case err := <-answered:
		if err == nil {
			return c, devtools, nil
		}
		if ctx.Err() == nil {
			<-c.Exited
			devtools.Close()
			return nil, nil, fmt.Errorf("start chromium: exited before ready (%v): %s", c.Err, c.Tail())
		}
	case <-c.Exited:
		devtools.Close()
		return nil, nil, fmt.Errorf("start chromium: exited before ready (%v): %s", c.Err, c.Tail())
	case <-ctx.Done():
	}
	c.Stop(log, 2*time.Second)
	devtools.Close()
	return nil, nil, fmt.Errorf("start chromium: %w", ctx.Err())
}

// chromiumEnv is Chromium's whole environment. TMPDIR is cfg.TmpDir, short
// enough for the singleton socket that Chromium binds below it.
func chromiumEnv(cfg Config, authFile string) []string {
	return []string{
		"HOME=" + cfg.BrowserHome,
		"PATH=" + os.Getenv("PATH"),
		"DISPLAY=:" + strconv.Itoa(cfg.Display),
		"XAUTHORITY=" + authFile,
		"XDG_CONFIG_HOME=" + filepath.Join(cfg.BrowserHome, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(cfg.BrowserHome, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(cfg.BrowserHome, ".local", "share"),
		"LANG=" + envOr("LANG", "C.UTF-8"),
		"TZ=" + os.Getenv("TZ"),
		"TMPDIR=" + cfg.BrowserTmpDir,
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
