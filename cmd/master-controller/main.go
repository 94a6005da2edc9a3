// Command master-controller is the control plane for short-lived isolated
// browser machines. Run "master-controller help" for its subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/master-controller/mc/app"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `master-controller: a control plane for short-lived, isolated browser machines.

A backend asks it for a login session (user, provider); it starts a browser in a
machine of its own, lets the user drive it through noVNC over an authenticated
WebSocket, seals the credentials the login produced in a vault, and tears the
machine down.

Usage:
  master-controller <command> [flags]

Commands:
  serve        run the controller: HTTP API, viewer gateway, session manager
               (applies database migrations first)
  migrate      apply database migrations and exit
  doctor       check what this host gives machines (cgroups, namespaces, firewall,
               Xvnc, Chromium, CLIs, memory) and which isolation they will get
  vault rotate re-seal every stored credential under the newest vault key
  network down remove the machine network (bridge, firewall and egress rules)
               that serve sets up and leaves for its next start
  websockify   a drop-in for websockify: bridge WebSocket clients to a TCP target
               (master-controller websockify [--web DIR] [--token-file F] LISTEN TARGET)
  version      print the version
  help         print this text, or "help <command>" for a command's flags

Every setting is a flag and an MC_* environment variable: see
"master-controller serve --help".
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	if isHelp(cmd) {
		cmd = "help"
	}
	switch cmd {
	case "serve", "migrate", "doctor":
		return serveOrMigrate(cmd, rest, stdout, stderr, getenv)
	case "vault", "network":
		sub := map[string]string{"vault": "rotate", "network": "down"}[cmd]
		switch {
		case len(rest) > 0 && rest[0] == sub:
			return serveOrMigrate(cmd+" "+sub, rest[1:], stdout, stderr, getenv)
		case len(rest) > 0 && isHelp(rest[0]):
			fmt.Fprintf(stdout, "usage: master-controller %s %s [flags]; see master-controller %[1]s %[2]s --help\n", cmd, sub)
			return 0
		}
		fmt.Fprintf(stderr, "usage: master-controller %s %s [flags]\n", cmd, sub)
		return 2
	case "websockify":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return websockify(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "master-controller", version)
		return 0
	case "help":
		if len(rest) > 0 && !isHelp(rest[0]) {
			// "help vault rotate" is "vault rotate --help".
			return run(append(slices.Clip(rest[:min(len(rest), 2)]), "--help"), stdout, stderr, getenv)
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "master-controller: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func isHelp(arg string) bool {
	switch arg {
	case "help", "--help", "-help", "-h":
		return true
	}
	return false
}

var commandHelp = map[string]string{
	"serve": `Run the controller. With no settings it uses the embedded defaults: SQLite
under ./data, the local runtime, an API key generated on first start.`,
	"migrate": `Apply the embedded database migrations to MC_DATABASE_URL and exit.`,
	"doctor": `Check what this host gives machines, one line each, and which isolation the
local driver will use. Exit status 1 when machines cannot run confined here.

  --machine  also start one machine with the configured driver (as serve would:
             leases from the configured store), wait until it is ready, print how
             long that took and the layers its browser reports on chrome://sandbox,
             and destroy it. Exit status 1 when it fails, or the browser's sandbox
             cannot be read or lacks a layer. Best with the server stopped: its
             reconcile (once a minute) destroys machines of no session of its own.`,
	"vault rotate": `Re-seal every stored credential under the newest vault key (the first in MC_VAULT_KEYS).`,
	"network down": `Remove the local driver's machine network (MC_BRIDGE, MC_NETWORK): the bridge and
its firewall and egress rules. The controller sets them up at start and leaves
them when it stops. Refused (exit status 1) while a controller uses the bridge
or machines are attached to it: stop the controller first, which destroys its
machines. Needs root.`,
}

func serveOrMigrate(cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	envProblems := cfg.Flags(fs, getenv)
	var tryMachine bool
	if cmd == "doctor" {
		fs.BoolVar(&tryMachine, "machine", false, "also start one machine and read its browser's sandbox")
	}
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: master-controller %s [flags]\n\n%s\n\nSettings (a flag wins over its environment variable):\n", cmd, commandHelp[cmd])
		cfg.PrintSettings(stdout)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "master-controller %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	problems := append(envProblems, cfg.Validate()...)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "config:", p)
		}
		return 2
	}
	log := app.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch cmd {
	case "doctor":
		ok := true
		found := app.Doctor(cfg)
		if tryMachine {
			found = append(found, app.TryMachine(ctx, cfg, log)...)
		}
		for _, f := range found {
			mark := "ok  "
			if !f.OK {
				mark, ok = "FAIL", false
			}
			fmt.Fprintf(stdout, "%s %-10s %s\n", mark, f.Name, f.Value)
		}
		if !ok {
			return 1
		}
		return 0
	case "migrate":
		if err := app.Migrate(ctx, cfg, log); err != nil {
			fmt.Fprintln(stderr, "migrate:", err)
			return 1
		}
		fmt.Fprintln(stdout, "migrations applied")
		return 0
	case "network down":
		msg, err := app.NetworkDown(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "network down:", err)
			return 1
		}
		fmt.Fprintln(stdout, msg)
		return 0
	case "vault rotate":
		n, err := app.RotateVault(ctx, cfg, log)
		if err != nil {
			fmt.Fprintln(stderr, "vault rotate:", err)
			return 1
		}
		fmt.Fprintf(stdout, "re-sealed %d credentials\n", n)
		return 0
	}

	m, err := app.New(ctx, cfg, log, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	runErr := m.Run(ctx)
	closeErr := m.Close()
	if runErr != nil || closeErr != nil {
		fmt.Fprintln(stderr, "serve:", errors.Join(runErr, closeErr))
		return 1
	}
	return 0
}
