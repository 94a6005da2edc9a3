package agent

import (
	"bufio"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
)

// A login command's terminal: the agent reads what the CLI writes, finds the
// URLs it prints (OSC 8 hyperlink targets included), answers its prompts,
// captures a printed token, and keeps its last lines (redacted) for a failure
// message.

// ptyCols is the login terminal's width: wide enough that no CLI wraps a
// 500-character sign-in URL over several lines.
const ptyCols = 2048

// keptLines is how many of the command's last lines a failure reports.
const keptLines = 12

// urlPattern finds http(s) URLs in a CLI's output.
var urlPattern = regexp.MustCompile(`https?://[^\s"'<>\x60\x1b\x07]+`)

// osc8Pattern matches an OSC 8 hyperlink opener and captures its target.
var osc8Pattern = regexp.MustCompile(`\x1b\]8;[^;\x07\x1b]*;([^\x07\x1b]*)(?:\x07|\x1b\\)`)

// ansiPattern matches terminal escape sequences (CSI and OSC) and the other
// two-byte escapes.
var ansiPattern = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]`)

// termEvents are what the terminal reader reports to the login.
type termEvents struct {
	// urls receives every URL the command prints, in order.
	urls chan string
	// captured receives the stdout capture's value, once.
	captured chan string
}

// terminal reads a login command's output.
type terminal struct {
	w       io.Writer // the pty, for answers and paste-back
	answers []answer
	capture *regexp.Regexp
	ev      termEvents

	mu    sync.Mutex
	lines []string // the last keptLines lines, cleaned and redacted
	// partial is the line being written (a prompt waits without a newline).
	partial string
	// screen is the cleaned output since the last answer of each kind was
	// matched, bounded to the last screenMax bytes.
	screen string
	got    bool // the capture has matched
}

// answer is one prompt the agent answers; it fires once.
type answer struct {
	re   *regexp.Regexp
	keys string
	done bool
}

// screenMax bounds the text kept for matching answers and the capture.
const screenMax = 64 << 10

func newTerminal(w io.Writer, answers []answer, capture *regexp.Regexp) *terminal {
	return &terminal{w: w, answers: answers, capture: capture,
		ev: termEvents{urls: make(chan string, 16), captured: make(chan string, 1)}}
}

// run reads r until it ends (EIO once the command has exited). A carriage
// return or a newline ends a line; an unfinished line (a prompt) is matched
// too, since prompts wait without a newline.
func (t *terminal) run(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 32<<10)
	var pending []byte // the current line, raw
	for {
		n, err := br.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			for len(chunk) > 0 {
				i := strings.IndexAny(string(chunk), "\r\n")
				if i < 0 {
					pending = append(pending, chunk...)
					if len(pending) > 256<<10 {
						pending = pending[len(pending)-256<<10:]
					}
					break
				}
				pending = append(pending, chunk[:i]...)
				t.line(string(pending), true)
				pending = pending[:0]
				chunk = chunk[i+1:]
			}
			if len(pending) > 0 {
				t.line(string(pending), false)
			}
		}
		if err != nil {
			return
		}
	}
}

// line handles one line of raw output; complete is false for a line still
// being written (it is seen again, longer, when it ends).
func (t *terminal) line(raw string, complete bool) {
	var urls []string
	for _, m := range osc8Pattern.FindAllStringSubmatch(raw, -1) {
		if m[1] != "" {
			urls = append(urls, m[1])
		}
	}
	clean := ansiPattern.ReplaceAllString(raw, "")
	clean = strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' {
			return -1
		}
		return r
	}, clean)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = ""
	if !complete {
		t.partial = clean
	}
	if complete {
		for _, u := range urlPattern.FindAllString(clean, -1) {
			urls = append(urls, strings.TrimRight(u, ".,;:)]}"))
		}
		if strings.TrimSpace(clean) != "" {
			t.lines = append(t.lines, redactLine(clean))
			if len(t.lines) > keptLines {
				t.lines = t.lines[len(t.lines)-keptLines:]
			}
		}
		t.screen += clean + "\n"
		if len(t.screen) > screenMax {
			t.screen = t.screen[len(t.screen)-screenMax:]
		}
		for _, u := range urls {
			select {
			case t.ev.urls <- u:
			default: // a CLI printing URLs nobody reads: drop
			}
		}
	}
	// Prompts are matched on the screen plus the unfinished line.
	text := t.screen
	if !complete {
		text += clean
	}
	for i := range t.answers {
		a := &t.answers[i]
		if a.done {
			continue
		}
		if a.re.MatchString(text) {
			a.done = true
			_, _ = io.WriteString(t.w, a.keys)
		}
	}
	if t.capture != nil && !t.got {
		if m := t.capture.FindStringSubmatch(text); m != nil && m[1] != "" {
			t.got = true
			t.ev.captured <- m[1]
		}
	}
}

// Type writes keys to the terminal (paste-back).
func (t *terminal) Type(keys string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := io.WriteString(t.w, keys)
	return err
}

// Lines returns the command's last lines, redacted, with the line it is
// still writing (a prompt) last.
func (t *terminal) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if strings.TrimSpace(t.partial) != "" {
		out = append(out, redactLine(t.partial))
	}
	return out
}

// secretPattern matches what looks like a code or a token: a run of 20 or
// more URL-safe characters with a digit in it, or a query value.
var (
	longToken  = regexp.MustCompile(`[A-Za-z0-9_\-.~+/=#]{20,}`)
	queryValue = regexp.MustCompile(`([?&][A-Za-z0-9_\-.]+=)[^&\s]*`)
	hasDigit   = regexp.MustCompile(`[0-9]`)
)

// redactLine removes from a line of CLI output what could be a secret: URL
// query values and long token-like words (a sign-in code, an access token).
func redactLine(s string) string {
	s = queryValue.ReplaceAllString(s, "${1}[redacted]")
	s = longToken.ReplaceAllStringFunc(s, func(w string) string {
		if strings.Contains(w, "://") || !hasDigit.MatchString(w) {
			return w
		}
		return "[redacted]"
	})
	return s
}

// isLoopbackURL reports whether u points to this machine (a CLI's own
// callback server): never a page to open for the user.
func isLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return true
	}
	host := u.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
