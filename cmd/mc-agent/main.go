// Command mc-agent is the machine agent: it runs inside each browser machine,
// starts Xvnc and Chromium, and serves the agent API. See package agent.
//
// Started as xdg-open or mc-open (the links a login command finds as
// BROWSER and first on PATH), it is the opener: it asks the agent to open
// its one argument, a URL, in the machine's visible tab.
//
// It exits 0 after SIGTERM or SIGINT (having stopped its children), 1 when
// Xvnc or Chromium exits unexpectedly or it cannot start, 2 on bad flags.
//
// Flags: --listen, --token-file, --vnc-listen, --vnc-password-file,
// --display, --home, --tmp-dir, --cli-dir, --start-url, --geometry,
// --xvnc, --chromium, --start-timeout, --log-level (see -help).
//
// "mc-agent init --machine FILE [--go-fd 3] -- AGENT FLAGS" is the first
// process of a confined machine, started by the local driver as root in new
// namespaces: it builds the machine's root file system as FILE (an
// agent.Machine in JSON) says, runs the agent inside without privileges, and
// exits with the agent's status.
//
// "mc-agent chromium-policy" prints the managed Chromium policy of a machine
// (JSON), which a machine image puts at
// /etc/chromium/policies/managed/mc.json (scripts/image/build.sh); the local
// driver's confined root has the same file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/agent"
	"github.com/master-controller/mc/internal/confine"
)

func main() {
	// Linked as xdg-open and mc-open (BROWSER) for login commands, it
	// hands the URL to the agent instead.
	if agent.IsOpener(os.Args[0]) {
		os.Exit(agent.Opener(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "init" {
		return runInit(args[1:], stderr)
	}
	if len(args) == 1 && args[0] == "chromium-policy" {
		b, err := confine.ChromiumPolicy()
		if err != nil {
			fmt.Fprintf(stderr, "mc-agent chromium-policy: %v\n", err)
			return 1
		}
		_, _ = os.Stdout.Write(b)
		return 0
	}
	fs := flag.NewFlagSet("mc-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg agent.Config
	var geometry, logLevel string
	fs.StringVar(&cfg.Listen, "listen", "", "agent API address (IP:PORT)")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file holding the agent token (Bearer auth)")
	fs.StringVar(&cfg.VNCListen, "vnc-listen", "", "address Xvnc listens on (IP:PORT)")
	fs.StringVar(&cfg.VNCPasswordFile, "vnc-password-file", "", "file holding the plaintext VNC password")
	fs.IntVar(&cfg.Display, "display", 0, "X display number N (:N)")
	fs.StringVar(&cfg.Home, "home", "", "private HOME; Chromium profile in HOME/chromium-profile")
	fs.StringVar(&cfg.TmpDir, "tmp-dir", "", fmt.Sprintf("TMPDIR of Chromium and login commands, at most %d bytes (Chromium's singleton socket is below it); created 0700 if missing (default HOME/tmp)", agent.MaxTmpDirLen))
	fs.StringVar(&cfg.BrowserHome, "browser-home", "", "Chromium's HOME, with its profile (default --home)")
	fs.StringVar(&cfg.BrowserTmpDir, "browser-tmp-dir", "", "Chromium's TMPDIR (default --tmp-dir)")
	fs.StringVar(&cfg.XAuthFile, "xauth-file", "", "X authority file to write (default --vnc-password-file + .xauth)")
	launcher := fs.Bool("launcher", false, "start Chromium through the machine's init (fd 3), under the browser's uid")
	fs.StringVar(&cfg.CLIDir, "cli-dir", "", "directory of the provider CLIs (claude, codex, gemini), on the login commands' PATH")
	fs.StringVar(&cfg.TestTrustSPKI, "test-trust-spki", "", "tests only: base64 SHA-256 of a certificate key Chromium accepts (a stand-in provider's)")
	fs.StringVar(&cfg.StartURL, "start-url", "", `first page; "local:/path" is one of the agent's own pages (`+agent.LocalOrigin+`/path, served through the browser's DevTools)`)
	fs.StringVar(&geometry, "geometry", "1280x800", "screen size WxH")
	fs.StringVar(&cfg.Xvnc, "xvnc", "Xvnc", "Xvnc binary")
	fs.StringVar(&cfg.Chromium, "chromium", "chromium", "Chromium binary (\"chromium\": Debian's /usr/lib/chromium/chromium when it is installed, without its launcher script; else found in PATH)")
	fs.DurationVar(&cfg.StartTimeout, "start-timeout", 0, "bound on the start of Xvnc and of Chromium, each (default 30s)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mc-agent: unexpected arguments %q\n", fs.Args())
		return 2
	}
	w, h, err := agent.ParseGeometry(geometry)
	if err != nil {
		fmt.Fprintf(stderr, "mc-agent: --geometry: %v\n", err)
		return 2
	}
	cfg.Width, cfg.Height = w, h
	if *launcher {
		cfg.Launcher = confine.NewLauncher(confine.LauncherFD)
	}
	if err := cfg.Check(); err != nil {
		fmt.Fprintf(stderr, "mc-agent: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "mc-agent: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "mc-agent")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		var exit *agent.ExitError
		if !errors.As(err, &exit) { // Run logged the child's exit itself
			log.Error("machine agent failed", mc.LogError, err)
		}
		return 1
	}
	return 0
}

// runInit is "mc-agent init": see the package comment.
func runInit(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mc-agent init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("machine", "", "JSON file describing the machine's confinement (confine.Spec)")
	goFD := fs.Int("go-fd", 0, "file descriptor to read to its end before confining (0: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "mc-agent init: --machine is required")
		return 2
	}
	m, err := confine.Read(*path)
	if err != nil {
		fmt.Fprintf(stderr, "mc-agent init: %v\n", err)
		return 2
	}
	var f *os.File
	if *goFD > 2 {
		f = os.NewFile(uintptr(*goFD), "go")
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("component", "mc-agent init")
	code, err := confine.Init(m, f, fs.Args(), log)
	if err != nil {
		fmt.Fprintf(stderr, "mc-agent init: %v\n", err)
	}
	return code
}
