package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// chromiumArgs is Chromium's command line: kiosk mode (no browser chrome) in
// a window at the screen's origin and size, so the page fills the whole VNC
// screen
// (pixel checks and clicks at fixed positions are then reliable); DevTools
// on 127.0.0.1 only; no first-run UI, background traffic, keyring or sync.
//
// No flag keeps the crash handler in the agent's process group: Chromium 156
// (Debian) always starts chrome_crashpad_handler in a session of its own.
// --disable-breakpad and --disable-crash-reporter do not stop it, and
// --disable-crashpad-for-testing does but makes the network service crash
// ("FD ownership violation"), so that no page loads (all checked with ps and
// a real page). The handler exits by itself within two seconds of its
// browser (measured after a SIGKILL of the group); the agent kills any left
// when it stops (killStrays), and the local driver kills the processes that
// carry the machine's HOME, and all in its namespace, on Destroy.
func chromiumArgs(cfg Config, startURL string, root, smallShm bool) []string {
	args := []string{
		"--user-data-dir=" + filepath.Join(cfg.Home, "chromium-profile"),
		"--remote-debugging-port=" + strconv.Itoa(cfg.CDPPort),
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
		// Without a window manager, kiosk mode cannot go full screen, and a
		// window of exactly the screen's size comes out one pixel short in
		// each direction (measured with Chromium 156 on Xvnc): ask for one
		// more, the X server clips it.
		fmt.Sprintf("--window-size=%d,%d", cfg.Width+1, cfg.Height+1),
		"--window-position=0,0",
		"--kiosk",
	}
	if root {
		args = append(args, "--no-sandbox")
	}
	if cfg.TestTrustSPKI != "" {
		args = append(args, "--ignore-certificate-errors-spki-list="+cfg.TestTrustSPKI)
	}
	if smallShm {
		// A small /dev/shm (containers, small VMs) crashes renderers.
		args = append(args, "--disable-dev-shm-usage")
	}
	return append(args, startURL)
}

// shmIsSmall reports whether /dev/shm is missing or smaller than 256 MiB.
func shmIsSmall() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil {
		return true
	}
	return uint64(st.Bsize)*st.Blocks < 256<<20
}

// startChromium starts Chromium on the display and returns once its DevTools
// endpoint listens. Its output is not logged (it can hold page URLs).
func startChromium(ctx context.Context, log *slog.Logger, cfg Config, startURL, authFile string) (*child, error) {
	cmd := exec.Command(cfg.Chromium, chromiumArgs(cfg, startURL, os.Geteuid() == 0, shmIsSmall())...)
	cmd.Dir = cfg.Home
	cmd.Env = chromiumEnv(cfg, authFile)
	ready := make(chan struct{})
	var once bool
	c, err := startChild("chromium", cmd, func(line string) {
		if !once && strings.HasPrefix(line, "DevTools listening on ") {
			once = true
			close(ready)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	select {
	case <-ready:
		return c, nil
	case <-c.Exited:
		return nil, fmt.Errorf("start chromium: exited before ready (%v): %s", c.Err, c.Tail())
	case <-ctx.Done():
		c.Stop(log, 2*time.Second)
		return nil, fmt.Errorf("start chromium: %w", ctx.Err())
	}
}

// chromiumEnv is Chromium's whole environment. TMPDIR is cfg.TmpDir, short
// enough for the singleton socket that Chromium binds below it.
func chromiumEnv(cfg Config, authFile string) []string {
	return []string{
		"HOME=" + cfg.Home,
		"PATH=" + os.Getenv("PATH"),
		"DISPLAY=:" + strconv.Itoa(cfg.Display),
		"XAUTHORITY=" + authFile,
		"XDG_CONFIG_HOME=" + filepath.Join(cfg.Home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(cfg.Home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(cfg.Home, ".local", "share"),
		"LANG=" + envOr("LANG", "C.UTF-8"),
		"TZ=" + os.Getenv("TZ"),
		"TMPDIR=" + cfg.TmpDir,
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
