package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The opener: how a CLI's "open a browser" reaches the machine's Chromium.
// Every login command runs with BROWSER=<shims>/mc-open and <shims> first on
// PATH, where both mc-open and xdg-open are links to the mc-agent binary.
// Started under either name, mc-agent is the opener: it hands its URL to the
// agent over a Unix socket in the machine's private TMPDIR (named by
// MC_AGENT_OPENER), and the agent opens it in the visible tab.

// OpenerEnv names the opener socket in a login command's environment.
const OpenerEnv = "MC_AGENT_OPENER"

// Names under which mc-agent runs as the opener.
const (
	openerName  = "mc-open"
	xdgOpenName = "xdg-open"
)

// IsOpener reports whether argv0 (the name mc-agent was started under) makes
// it the opener.
func IsOpener(argv0 string) bool {
	return slices.Contains([]string{openerName, xdgOpenName}, filepath.Base(argv0))
}

// Opener is the opener's main: it asks the agent to open args[0] in the
// machine's browser and returns the exit status (0 once the agent took it).
func Opener(args []string, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "" {
		fmt.Fprintln(stderr, "usage: xdg-open URL (opens the URL in the machine's browser)")
		return 1
	}
	sock := os.Getenv(OpenerEnv)
	if sock == "" {
		fmt.Fprintf(stderr, "xdg-open: %s is not set: not started by the machine agent\n", OpenerEnv)
		return 3
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := hc.Post("http://agent/open", "text/plain", strings.NewReader(args[0]))
	if err != nil {
		fmt.Fprintf(stderr, "xdg-open: the machine agent did not answer: %v\n", errors.Unwrap(err))
		return 4
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		fmt.Fprintf(stderr, "xdg-open: %s\n", strings.TrimSpace(string(msg)))
		return 4
	}
	return 0
}

// opener is the agent's side: the socket and the shim directory.
type opener struct {
	sock string // the socket's path
	bin  string // the shim directory, first on the command's PATH
	ln   net.Listener
	srv  *http.Server
}

// startOpener links the shims to exe in tmpDir/mc-bin and serves the socket
// tmpDir/mc-open.sock; open is called with each URL a command asks for.
func startOpener(tmpDir, exe string, open func(string) error) (*opener, error) {
	o := &opener{sock: filepath.Join(tmpDir, "mc-open.sock"), bin: filepath.Join(tmpDir, "mc-bin")}
	if err := os.MkdirAll(o.bin, 0o700); err != nil {
		return nil, fmt.Errorf("create opener shims: %w", err)
	}
	for _, name := range []string{openerName, xdgOpenName} {
		link := filepath.Join(o.bin, name)
		_ = os.Remove(link)
		if err := os.Symlink(exe, link); err != nil {
			return nil, fmt.Errorf("create opener shim %s: %w", name, err)
		}
	}
	_ = os.Remove(o.sock)
	ln, err := net.Listen("unix", o.sock)
	if err != nil {
		return nil, fmt.Errorf("listen opener socket: %w", err)
	}
	_ = os.Chmod(o.sock, 0o600)
	o.ln = ln
	o.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/open" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
		if err != nil {
			http.Error(w, "read url", http.StatusBadRequest)
			return
		}
		if err := open(strings.TrimSpace(string(b))); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = o.srv.Serve(ln) }()
	return o, nil
}

// Close stops serving and removes the socket.
func (o *opener) Close() {
	_ = o.srv.Close()
	_ = os.Remove(o.sock)
}
