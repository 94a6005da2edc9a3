package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	proto "github.com/master-controller/mc/agentproto"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/master-controller/mc"
)

// DefaultLoginTimeout applies when a provider gives none.
const DefaultLoginTimeout = 10 * time.Minute

// Browser is what a login needs of the machine's browser.
type Browser interface {
	// Open navigates the browser to url.
	Open(ctx context.Context, url string) error
}

// errGone says a result was already handed over (HTTP 410).
var errGone = &mc.Error{Code: mc.ENOTFOUND, Reason: "result_delivered", Message: "the login result was already fetched"}

// login runs at most one provider login at a time and keeps its result until
// it is fetched once.
type login struct {
	home     string
	tmpDir   string // TMPDIR of login commands
	pageBase string // http://<page-listen>, for local: URLs
	browser  Browser
	log      *slog.Logger
	// commandGrace is how long a login command may keep running after the
	// files are complete before it is killed.
	commandGrace time.Duration

	mu      sync.Mutex
	status  proto.LoginStatus
	files   map[string]string
	paths   []string      // absolute paths of the files, deleted on delivery
	changed chan struct{} // closed and replaced on every status change
	cancel  context.CancelFunc
	done    chan struct{} // closed when the running login's goroutine ends
}

func newLogin(home, tmpDir, pageBase string, b Browser, log *slog.Logger) *login {
	return &login{
		home: home, tmpDir: tmpDir, pageBase: pageBase, browser: b, log: log,
		commandGrace: 3 * time.Second,
		status:       proto.LoginStatus{State: proto.StateIdle},
		changed:      make(chan struct{}),
	}
}

// setLocked changes the status and wakes long-polling readers.
func (l *login) setLocked(s proto.LoginStatus) {
	s.Seq = l.status.Seq + 1
	l.status = s
	close(l.changed)
	l.changed = make(chan struct{})
}

// Status returns the status. With wait > 0 and a running login it blocks
// until the status's Seq differs from since (since < 0: until the login is
// no longer running), wait elapses or ctx ends.
func (l *login) Status(ctx context.Context, since int64, wait time.Duration) proto.LoginStatus {
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	for {
		l.mu.Lock()
		s, ch := l.status, l.changed
		l.mu.Unlock()
		if wait <= 0 || s.State != proto.StateRunning || (since >= 0 && s.Seq != since) {
			return s
		}
		select {
		case <-ch:
		case <-t.C:
			return s
		case <-ctx.Done():
			return s
		}
	}
}

// Start validates p and starts its login.
// Errors: EINVALID (bad provider), ECONFLICT (a login is running, or its
// result has not been fetched).
func (l *login) Start(p mc.Provider) error {
	files, startURL, err := l.plan(p)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.status.State == proto.StateRunning:
		return mc.Errorf(mc.ECONFLICT, "login_running", "a login is already running")
	case l.status.State == proto.StateComplete && !l.status.Delivered:
		return mc.Errorf(mc.ECONFLICT, "result_pending", "the previous login's result has not been fetched")
	}
	timeout := p.LoginTimeout
	if timeout <= 0 {
		timeout = DefaultLoginTimeout
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, errLoginTimeout)
	l.cancel = cancel
	l.done = make(chan struct{})
	l.files, l.paths = nil, nil
	for _, f := range files {
		l.paths = append(l.paths, f.Path)
	}
	l.setLocked(proto.LoginStatus{State: proto.StateRunning, Message: "login started"})
	l.log.Info("login started", mc.LogProvider, p.Name)
	go l.run(ctx, cancel, p, files, startURL, l.done)
	return nil
}

// errLoginTimeout is the cause of a login context that hit the provider's
// timeout (rather than the agent's shutdown).
var errLoginTimeout = errors.New("login timeout")

// plan checks p and resolves its files and start URL.
func (l *login) plan(p mc.Provider) ([]watchedFile, string, error) {
	if len(p.Files) == 0 {
		return nil, "", mc.Errorf(mc.EINVALID, "invalid_provider", "provider %q names no credential files", p.Name)
	}
	var files []watchedFile
	for _, f := range p.Files {
		abs, err := resolveHomePath(l.home, f.Path)
		if err != nil {
			return nil, "", err
		}
		before, _ := os.Stat(abs)
		files = append(files, watchedFile{Name: f.Path, Path: abs, RequiredKeys: f.RequiredKeys, Before: before})
	}
	var startURL string
	if p.StartURL != "" {
		u, err := resolveURL(p.StartURL, l.pageBase)
		if err != nil {
			return nil, "", err
		}
		startURL = u
	}
	if len(p.LoginCommand) > 0 && p.LoginCommand[0] == "" {
		return nil, "", mc.Errorf(mc.EINVALID, "invalid_provider", "provider %q has an empty login command", p.Name)
	}
	return files, startURL, nil
}

// resolveURL rewrites "local:/path" to the page server and accepts only
// http(s) URLs and about:blank.
func resolveURL(raw, pageBase string) (string, error) {
	if rest, ok := strings.CutPrefix(raw, "local:"); ok {
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		raw = pageBase + rest
	}
	if raw == "about:blank" {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", mc.Errorf(mc.EINVALID, "invalid_url", "url must be http(s), about:blank or local:/path")
	}
	return u.String(), nil
}

// redactURL keeps scheme, host and path: query strings of login URLs hold
// state and codes that stay out of logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

func (l *login) finish(s proto.LoginStatus, files map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.URL = l.status.URL
	l.files = files
	l.setLocked(s)
}

func (l *login) setURL(u string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.URL = u
	if s.State == proto.StateRunning {
		s.Message = "opened the login page"
	}
	l.setLocked(s)
}

// run is the login's goroutine.
func (l *login) run(ctx context.Context, cancel context.CancelFunc, p mc.Provider, files []watchedFile, startURL string, done chan struct{}) {
	defer close(done)
	defer cancel()
	log := l.log.With(mc.LogProvider, p.Name)
	fail := func(reason mc.Reason, msg string) {
		log.Warn("login failed", mc.LogReason, reason)
		l.finish(proto.LoginStatus{State: proto.StateFailed, Reason: reason, Message: msg}, nil)
	}
	if startURL != "" {
		l.setURL(startURL) // before: the page may finish the login before Open returns
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.browser.Open(octx, startURL)
		cancel()
		if err != nil {
			log.Warn("open start url", "url", redactURL(startURL), "err", err)
			fail(proto.ReasonBrowserError, "could not open the login page")
			return
		}
	}

	var cmdDone chan error
	var urls <-chan string
	var cmd *exec.Cmd
	// grace is how long the command may go on once the login has ended: a
	// while after success (it may still print or tidy up), none otherwise.
	var grace time.Duration
	if len(p.LoginCommand) > 0 {
		var err error
		cmd, urls, cmdDone, err = l.startCommand(p.LoginCommand)
		if err != nil {
			log.Warn("start login command", "err", err)
			fail(proto.ReasonCommandFailed, "the login command could not start")
			return
		}
		defer func() {
			if grace > 0 {
				go l.stopCommand(log, cmd, cmdDone, grace)
			} else {
				l.stopCommand(log, cmd, cmdDone, 0)
			}
		}()
	}

	watched := make(chan map[string]string, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		got, err := waitForFiles(watchCtx, l.home, files)
		if err != nil {
			if watchCtx.Err() == nil {
				log.Error("watch credential files", "err", err)
			}
			return
		}
		watched <- got
	}()

	complete := func(got map[string]string) {
		log.Info("login complete", "files", len(got))
		l.finish(proto.LoginStatus{State: proto.StateComplete, Message: "credentials captured"}, got)
	}
	for {
		select {
		case got := <-watched:
			grace = l.commandGrace
			complete(got)
			return
		case u := <-urls:
			urls = nil  // only the first URL is opened
			l.setURL(u) // before: the page may finish the login before Open returns
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := l.browser.Open(octx, u)
			cancel()
			if err != nil {
				log.Warn("open url printed by login command", "url", redactURL(u), "err", err)
				fail(proto.ReasonBrowserError, "could not open the login page")
				return
			}
			log.Info("opened url printed by login command", "url", redactURL(u))
		case err := <-cmdDone:
			cmdDone = nil // the stopper must not wait for it again
			if got, ok := checkAll(files); ok {
				complete(got)
				return
			}
			if err != nil {
				log.Warn("login command exited", "err", err)
				fail(proto.ReasonCommandFailed, "the login command failed")
			} else {
				fail(proto.ReasonCredentialsMissing, "the login command exited without writing the credential files")
			}
			return
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errLoginTimeout) {
				fail(proto.ReasonLoginTimeout, "the login did not finish in time")
			} else {
				fail(proto.ReasonCancelled, "the login was cancelled")
			}
			return
		}
	}
}

// urlPattern finds http(s) URLs in a CLI's output.
var urlPattern = regexp.MustCompile(`https?://[^\s"'<>\x60]+`)

// ansiPattern matches terminal escape sequences (CSI and OSC).
var ansiPattern = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]`)

// firstURL returns the first http(s) URL in a line of terminal output.
func firstURL(line string) string {
	line = ansiPattern.ReplaceAllString(line, "")
	return strings.TrimRight(urlPattern.FindString(line), ".,;:)]}")
}

// startCommand runs argv under a pseudo-terminal in its own session (so it has
// a controlling terminal, as CLIs expect), with HOME set and no DISPLAY (so a
// CLI prints its URL instead of starting a browser of its own). urls receives
// the first URL the command prints; done receives its exit error, once.
func (l *login) startCommand(argv []string) (cmd *exec.Cmd, urls <-chan string, done chan error, err error) {
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Dir = l.home
	cmd.Env = []string{
		"HOME=" + l.home,
		"PATH=" + os.Getenv("PATH"),
		"TERM=xterm-256color",
		"LANG=" + envOr("LANG", "C.UTF-8"),
		"USER=" + envOr("USER", "root"),
		"TMPDIR=" + l.tmpDir,
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Pdeathsig: syscall.SIGKILL}
	tty, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: 50, Cols: 400}, cmd.SysProcAttr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	found := make(chan string, 1)
	go func() {
		defer tty.Close()
		readURLs(tty, found)
	}()
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return cmd, found, done, nil
}

// readURLs reads terminal output line by line (a carriage return also ends a
// line), sends the first URL it finds, and drains the rest.
func readURLs(r io.Reader, urls chan<- string) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	sent := false
	for {
		b, err := br.ReadByte()
		if err != nil {
			break // EIO once the terminal's other side is closed
		}
		if b != '\n' && b != '\r' {
			if len(line) < 64<<10 {
				line = append(line, b)
			}
			continue
		}
		if !sent {
			if u := firstURL(string(line)); u != "" {
				urls <- u
				sent = true
			}
		}
		line = line[:0]
	}
	if !sent {
		if u := firstURL(string(line)); u != "" {
			urls <- u
		}
	}
}

// stopCommand lets a login command finish for grace, then kills its process
// group.
func (l *login) stopCommand(log *slog.Logger, cmd *exec.Cmd, done chan error, grace time.Duration) {
	if cmd == nil || done == nil {
		return
	}
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	log.Info("login command killed after the login ended")
}

// Result hands over the files of a complete login once and deletes the
// agent's copy: the files in home and the one in memory.
// Errors: ENOTFOUND (no login), ECONFLICT (not complete), errGone.
func (l *login) Result() (proto.LoginResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.status.State == proto.StateIdle:
		return proto.LoginResult{}, mc.Errorf(mc.ENOTFOUND, "no_login", "no login has been started")
	case l.status.State == proto.StateComplete && l.status.Delivered:
		return proto.LoginResult{}, errGone
	case l.status.State != proto.StateComplete:
		return proto.LoginResult{}, mc.Errorf(mc.ECONFLICT, "login_not_complete", "the login is %s", l.status.State)
	}
	res := proto.LoginResult{Files: l.files}
	l.files = nil
	for _, p := range l.paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("delete credential file", "err", err)
		}
	}
	s := l.status
	s.Delivered = true
	s.Message = "result delivered"
	l.setLocked(s)
	return res, nil
}

// Close cancels a running login and waits for it to end.
func (l *login) Close() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}
