package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/atomicfile"
)

// DefaultLoginTimeout applies when a provider gives none.
const DefaultLoginTimeout = 10 * time.Minute

// Browser is what a login needs of the machine's browser.
type Browser interface {
	// Open navigates the visible tab to url.
	Open(ctx context.Context, url string) error
	// TabURLs returns the URLs of the browser's open pages, the visible tab
	// first (for paste-back, to see the provider send the browser to a
	// CLI's callback, and to see the start URL already shown).
	TabURLs(ctx context.Context) ([]string, error)
}

// errGone says a result was already handed over (HTTP 410).
var errGone = &mc.Error{Code: mc.ENOTFOUND, Reason: mc.ReasonResultDelivered, Message: "the login result was already fetched"}

// loginConfig is where logins run.
type loginConfig struct {
	home     string
	tmpDir   string // TMPDIR of login commands
	pageBase string // LocalOrigin (a test's server in tests), for local: URLs
	// display is the X display a login command is told of (0: none).
	display int
	// cliDir holds the provider CLIs; it comes on PATH after the shims.
	cliDir string
	// openerExe is the binary linked as xdg-open and mc-open (mc-agent).
	openerExe string
	// tabPoll is how often the browser's tabs are looked at while a login
	// command runs (default 250 ms).
	tabPoll time.Duration
}

// login runs at most one provider login at a time and keeps its result until
// it is fetched once.
type login struct {
	loginConfig
	browser Browser
	log     *slog.Logger
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

func newLogin(cfg loginConfig, b Browser, log *slog.Logger) *login {
	if cfg.tabPoll <= 0 {
		cfg.tabPoll = 250 * time.Millisecond
	}
	return &login{
		loginConfig: cfg, browser: b, log: log,
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
		return mc.Errorf(mc.ECONFLICT, mc.ReasonLoginRunning, "a login is already running")
	case l.status.State == proto.StateComplete && !l.status.Delivered:
		return mc.Errorf(mc.ECONFLICT, mc.ReasonResultPending, "the previous login's result has not been fetched")
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
	// Only the machine's first login may find its start URL shown by the
	// launch; a later one finds what the earlier login left.
	first := l.status.State == proto.StateIdle
	l.setLocked(proto.LoginStatus{State: proto.StateRunning, Message: "login started"})
	l.log.Info("login started", mc.LogProvider, p.Name)
	go l.run(ctx, cancel, p, files, startURL, first, l.done)
	return nil
}

// errLoginTimeout is the cause of a login context that hit the provider's
// timeout (rather than the agent's shutdown).
var errLoginTimeout = errors.New("login timeout")

// plan checks p and resolves its files and start URL.
func (l *login) plan(p mc.Provider) ([]watchedFile, string, error) {
	if len(p.Files) == 0 && p.StdoutCapture == nil {
		return nil, "", mc.Errorf(mc.EINVALID, mc.ReasonInvalidProvider, "provider %q names no credential files", p.Name)
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
		return nil, "", mc.Errorf(mc.EINVALID, mc.ReasonInvalidProvider, "provider %q has an empty login command", p.Name)
	}
	return files, startURL, nil
}

// showing reports whether the browser's visible tab shows u.
func (l *login) showing(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	urls, err := l.browser.TabURLs(ctx)
	return err == nil && len(urls) > 0 && sameURL(urls[0], u)
}

// sameURL reports whether a and b name one page as a browser shows it: an
// empty path is "/" (the browser adds it), the rest is compared as is.
func sameURL(a, b string) bool {
	norm := func(s string) string {
		u, err := url.Parse(s)
		if err != nil {
			return s
		}
		if u.Path == "" && u.Host != "" {
			u.Path = "/"
		}
		return u.String()
	}
	return norm(a) == norm(b)
}

// resolveURL rewrites "local:/path" to a local page and accepts only
// http(s) URLs and about:blank.
func resolveURL(raw, pageBase string) (string, error) {
	if rest, ok := strings.CutPrefix(raw, "local:"); ok {
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		raw = pageBase + rest
	}
	if raw == "about:blank" || testFileURLs && strings.HasPrefix(raw, "file:///") {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", mc.Errorf(mc.EINVALID, mc.ReasonInvalidURL, "url must be http(s), about:blank or local:/path")
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
	if s.Phase == "" {
		s.Phase = l.status.Phase
	}
	l.files = files
	l.setLocked(s)
}

// setPhase moves a running login to phase, waiting on page (kept as scheme,
// host and path only) when page is not "".
func (l *login) setPhase(phase mc.LoginPhase, page, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	if s.State != proto.StateRunning {
		return
	}
	if page != "" {
		page = redactURL(page)
	}
	if s.Phase == phase && (page == "" || s.URL == page) {
		return
	}
	s.Phase = phase
	if page != "" {
		s.URL = page
	}
	s.Message = msg
	l.setLocked(s)
}

// run is the login's goroutine.
func (l *login) run(ctx context.Context, cancel context.CancelFunc, p mc.Provider, files []watchedFile, startURL string, first bool, done chan struct{}) {
	defer close(done)
	defer cancel()
	log := l.log.With(mc.LogProvider, p.Name)
	var term *terminal
	lines := func() []string {
		if term == nil {
			return nil
		}
		return term.Lines()
	}
	fail := func(reason mc.Reason, msg string) {
		log.Warn("login failed", mc.LogReason, reason, "lines", lines())
		l.finish(proto.LoginStatus{State: proto.StateFailed, Reason: reason, Message: msg, Lines: lines()}, nil)
	}
	// open shows u in the visible tab. A page that fails to load (a
	// provider offline) is the user's to see and retry; only a start URL
	// that cannot be shown ends the login.
	open := func(u, what string, must bool) bool {
		l.setPhase(mc.PhaseWaitingForUser, u, "waiting for the user to sign in")
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.browser.Open(octx, u)
		cancel()
		if err != nil {
			log.Warn("open "+what, "url", redactURL(u), mc.LogError, err)
			if must {
				fail(proto.ReasonBrowserError, "could not open the login page")
				return false
			}
			return true
		}
		log.Info("opened "+what, "url", redactURL(u))
		return true
	}
	if startURL != "" {
		// A machine launched on the start URL shows it already (loaded or
		// loading): opening it again would reload the page under the
		// user's first click.
		if first && l.showing(ctx, startURL) {
			l.setPhase(mc.PhaseWaitingForUser, startURL, "waiting for the user to sign in")
			log.Info("start url already shown", "url", redactURL(startURL))
		} else if !open(startURL, "start url", true) {
			return
		}
	}

	var (
		cmdDone  chan error
		cmd      *exec.Cmd
		urls     <-chan string
		captured <-chan string
		asked    = make(chan string, 4) // URLs the command's opener asked for
		tabs     <-chan time.Time
		openRe   *regexp.Regexp
		// grace is how long the command may go on once the login has
		// ended: a while after success (it may still print or tidy up),
		// none otherwise.
		grace time.Duration
	)
	if len(p.LoginCommand) > 0 {
		l.setPhase(mc.PhaseStartingCLI, "", "starting "+p.LoginCommand[0])
		if p.OpenURL != nil {
			openRe = regexp.MustCompile(p.OpenURL.Match) // checked by prepare
		}
		op, err := startOpener(l.tmpDir, l.openerExe, func(u string) error {
			if _, err := resolveURL(u, ""); err != nil || strings.HasPrefix(u, "local:") {
				return errors.New("only http(s) URLs can be opened")
			}
			select {
			case asked <- u:
				return nil
			default:
				return errors.New("too many URLs at once")
			}
		})
		if err != nil {
			log.Error("start opener", mc.LogError, err)
			fail(proto.ReasonCommandFailed, "the login command could not start")
			return
		}
		defer op.Close()
		var answers []answer
		var capture *regexp.Regexp
		answers, capture, err = l.prepare(p)
		if err != nil {
			log.Warn("prepare login command", mc.LogError, err)
			fail(proto.ReasonCommandFailed, "the login command could not be prepared")
			return
		}
		cmd, term, cmdDone, err = l.startCommand(p, op, answers, capture)
		if err != nil {
			log.Warn("start login command", mc.LogError, err)
			fail(proto.ReasonCommandFailed, "the login command could not start")
			return
		}
		urls, captured = term.ev.urls, term.ev.captured
		defer func() {
			if grace > 0 {
				go l.stopCommand(log, cmd, cmdDone, grace)
			} else {
				l.stopCommand(log, cmd, cmdDone, 0)
			}
		}()
		tick := time.NewTicker(l.tabPoll)
		defer tick.Stop()
		tabs = tick.C
	}

	watched := make(chan map[string]string, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		got, err := waitForFiles(watchCtx, l.home, files)
		if err != nil {
			if watchCtx.Err() == nil {
				log.Error("watch credential files", mc.LogError, err)
			}
			return
		}
		watched <- got
	}()

	var (
		got      map[string]string // complete files, once they are
		token    string            // the stdout capture
		launched bool              // the command asked the opener for a page
		printed  bool              // a printed URL was opened
		pasted   = map[string]bool{}
		// shown are the URLs opened: a command that prints its URL and
		// also hands it to the opener (Codex) gets one navigation, not a
		// second that would reload the page under the user's click.
		shown = map[string]bool{}
	)
	ready := func() bool {
		return got != nil && (p.StdoutCapture == nil || token != "")
	}
	complete := func() {
		grace = l.commandGrace
		res := maps.Clone(got)
		if p.StdoutCapture != nil {
			b, _ := json.Marshal(map[string]string{"token": token})
			res[p.StdoutCapture.File] = string(b)
		}
		log.Info("login complete", "files", len(res))
		l.finish(proto.LoginStatus{State: proto.StateComplete, Phase: mc.PhaseCaptured, Message: "credentials captured"}, res)
	}
	for {
		select {
		case got = <-watched:
			watched = nil
			if ready() {
				complete()
				return
			}
		case token = <-captured:
			captured = nil
			l.setPhase(mc.PhaseCompleting, "", "the command printed its credential")
			if ready() {
				complete()
				return
			}
		case u := <-asked:
			if p.OpenURL != nil && p.OpenURL.InsteadOfBrowser {
				log.Info("url from the command's browser opener not opened: the recipe opens the printed one", "url", redactURL(u))
				continue
			}
			launched = true
			if shown[u] {
				continue
			}
			shown[u] = true
			if !open(u, "url from the command's browser opener", false) {
				return
			}
		case u := <-urls:
			if openRe == nil || launched || printed || isLoopbackURL(u) || !openRe.MatchString(u) {
				continue
			}
			printed, shown[u] = true, true
			if !open(u, "url printed by the login command", false) {
				return
			}
		case <-tabs:
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			tabURLs, err := l.browser.TabURLs(tctx)
			cancel()
			if err != nil {
				continue
			}
			for _, u := range tabURLs {
				if isLoopbackURL(u) && strings.HasPrefix(u, "http") {
					l.setPhase(mc.PhaseCompleting, "", "the provider sent the browser back to the command")
				}
				if p.PasteBack == nil || pasted[u] || !strings.HasPrefix(u, p.PasteBack.URLPrefix) {
					continue
				}
				pasted[u] = true
				keys, ok := pasteKeys(p.PasteBack.Template, u)
				if !ok {
					log.Warn("paste-back page lacks a value of the template", "url", redactURL(u))
					continue
				}
				if err := term.Type(keys); err != nil {
					log.Warn("paste back", mc.LogError, err)
					continue
				}
				log.Info("typed the code from the browser into the command", "url", redactURL(u))
				l.setPhase(mc.PhaseCompleting, "", "typed the code back into the command")
			}
		case err := <-cmdDone:
			cmdDone = nil // the stopper must not wait for it again
			if got == nil {
				got, _ = checkAll(files)
			}
			if ready() {
				complete()
				return
			}
			if err != nil {
				log.Warn("login command exited", mc.LogError, err)
				fail(proto.ReasonCommandFailed, "the login command failed: "+exitText(err))
			} else {
				fail(proto.ReasonCredentialsMissing, "the login command exited without writing complete credentials")
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

// exitText is a command's exit, without its arguments.
func exitText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return "it could not run"
}

// placeholder is a "{name}" of a paste-back template.
var placeholder = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

// pasteKeys fills template with the query values of page; ok is false when
// one is missing.
func pasteKeys(template, page string) (string, bool) {
	u, err := url.Parse(page)
	if err != nil {
		return "", false
	}
	q := u.Query()
	ok := true
	keys := placeholder.ReplaceAllStringFunc(template, func(m string) string {
		v := q.Get(m[1 : len(m)-1])
		if v == "" {
			ok = false
		}
		return v
	})
	return keys, ok
}

// prepare writes the provider's seed files into home and compiles its
// answers and stdout capture.
func (l *login) prepare(p mc.Provider) ([]answer, *regexp.Regexp, error) {
	for _, f := range p.SeedFiles {
		path, err := resolveHomePath(l.home, f.Path)
		if err != nil {
			return nil, nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, fmt.Errorf("seed %s: %w", f.Path, err)
		}
		content := strings.ReplaceAll(f.Content, "{home}", l.home)
		if err := atomicfile.Write(path, []byte(content), 0o600); err != nil {
			return nil, nil, fmt.Errorf("seed %s: %w", f.Path, err)
		}
	}
	var answers []answer
	for _, a := range p.Answers {
		re, err := regexp.Compile(a.Pattern)
		if err != nil {
			return nil, nil, fmt.Errorf("answer pattern: %w", err)
		}
		answers = append(answers, answer{re: re, keys: a.Keys})
	}
	var capture *regexp.Regexp
	if p.StdoutCapture != nil {
		re, err := regexp.Compile(p.StdoutCapture.Pattern)
		if err != nil || re.NumSubexp() < 1 {
			return nil, nil, fmt.Errorf("stdout capture pattern: %v", err)
		}
		capture = re
	}
	return answers, capture, nil
}

// commandEnv is a login command's environment: a clean one with HOME, the
// opener (BROWSER, and the shims first on PATH), DISPLAY, then the
// provider's env ("~/" values in home; a *_HOME or *_DIR directory is
// created).
func (l *login) commandEnv(p mc.Provider, op *opener) ([]string, error) {
	path := op.bin
	if l.cliDir != "" {
		path += ":" + l.cliDir
	}
	path += ":" + os.Getenv("PATH")
	env := []string{
		"HOME=" + l.home,
		"PATH=" + path,
		"TERM=xterm-256color",
		"COLUMNS=" + strconv.Itoa(ptyCols),
		"LANG=" + envOr("LANG", "C.UTF-8"),
		"USER=" + envOr("USER", "root"),
		"TMPDIR=" + l.tmpDir,
		"BROWSER=" + filepath.Join(op.bin, openerName),
		OpenerEnv + "=" + op.sock,
	}
	if l.display > 0 {
		env = append(env, "DISPLAY=:"+strconv.Itoa(l.display))
	}
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		v := p.Env[k]
		if strings.HasPrefix(v, "~/") {
			abs, err := resolveHomePath(l.home, v)
			if err != nil {
				return nil, err
			}
			v = abs
			if strings.HasSuffix(k, "_HOME") || strings.HasSuffix(k, "_DIR") {
				if err := os.MkdirAll(abs, 0o700); err != nil {
					return nil, fmt.Errorf("create %s: %w", k, err)
				}
			}
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// startCommand runs the provider's command under a wide pseudo-terminal in
// its own session (so it has a controlling terminal, as CLIs expect), in
// home. done receives its exit error, once.
func (l *login) startCommand(p mc.Provider, op *opener, answers []answer, capture *regexp.Regexp) (*exec.Cmd, *terminal, chan error, error) {
	env, err := l.commandEnv(p, op)
	if err != nil {
		return nil, nil, nil, err
	}
	argv := p.LoginCommand
	cmd := exec.Command(argv[0], argv[1:]...)
	// The program is looked up on the command's own PATH (the CLIs'
	// directory), not only the agent's.
	for _, kv := range env {
		if path, ok := strings.CutPrefix(kv, "PATH="); ok && !strings.Contains(argv[0], "/") {
			if found := lookPath(argv[0], path); found != "" {
				cmd.Path, cmd.Err = found, nil
			}
		}
	}
	cmd.Dir = l.home
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Pdeathsig: syscall.SIGKILL}
	tty, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: 50, Cols: ptyCols}, cmd.SysProcAttr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	term := newTerminal(tty, answers, capture)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		defer tty.Close()
		term.run(tty)
	}()
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// The command's last words may still be in the terminal: let the
		// reader take them (it ends at EIO once no process holds the
		// terminal) before the exit is reported with them, bounded for a
		// child that keeps the terminal open.
		t := time.NewTimer(time.Second)
		select {
		case <-drained:
		case <-t.C:
		}
		t.Stop()
		done <- err
	}()
	return cmd, term, done, nil
}

// lookPath finds an executable file named name in the directories of path.
func lookPath(name, path string) string {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
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
		return proto.LoginResult{}, mc.Errorf(mc.ENOTFOUND, mc.ReasonNoLogin, "no login has been started")
	case l.status.State == proto.StateComplete && l.status.Delivered:
		return proto.LoginResult{}, errGone
	case l.status.State != proto.StateComplete:
		return proto.LoginResult{}, mc.Errorf(mc.ECONFLICT, mc.ReasonLoginNotComplete, "the login is %s", l.status.State)
	}
	res := proto.LoginResult{Files: l.files}
	l.files = nil
	for _, p := range l.paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("delete credential file", mc.LogError, err)
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
