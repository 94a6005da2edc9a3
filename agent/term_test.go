package agent

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/master-controller/mc/internal/testutil"
)

func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case u := <-ch:
			out = append(out, u)
		default:
			return out
		}
	}
}

func TestTerminalURLs(t *testing.T) {
	tests := []struct {
		name, out string
		want      []string
	}{
		{"codex prints its server first", "Starting local login server on http://localhost:1455.\r\n" +
			"If your browser did not open, navigate to this URL to authenticate:\r\n\r\n" +
			"https://auth.openai.com/oauth/authorize?response_type=code&state=s1\r\n",
			[]string{"http://localhost:1455", "https://auth.openai.com/oauth/authorize?response_type=code&state=s1"}},
		{"bold", "\x1b[1mVisit\x1b[0m https://example.com/a?b=c.\n", []string{"https://example.com/a?b=c"}},
		{"osc 8 target differs from its text", "\x1b]8;;https://claude.ai/oauth/authorize?z-abc\x07Sign in\x1b]8;;\x07\n",
			[]string{"https://claude.ai/oauth/authorize?z-abc"}},
		{"parenthesised", "(see https://e.com/docs)\n", []string{"https://e.com/docs"}},
		{"none", "no url here, ftp://e.com/x\n", nil},
		{"a 600-character URL on one line", "https://claude.com/cai/oauth/authorize?code=true&x=" + strings.Repeat("a", 600) + "\n",
			[]string{"https://claude.com/cai/oauth/authorize?code=true&x=" + strings.Repeat("a", 600)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			term := newTerminal(&testutil.SyncBuffer{}, nil, nil)
			term.run(strings.NewReader(tt.out))
			if got := drain(term.ev.urls); !slices.Equal(got, tt.want) {
				t.Errorf("urls %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTerminalAnswersAndCapture(t *testing.T) {
	typed := &testutil.SyncBuffer{}
	answers := []answer{
		{re: regexp.MustCompile(`Sign in with Google`), keys: "\r"},
		{re: regexp.MustCompile(`Do you want to continue\?`), keys: "y\r"},
	}
	term := newTerminal(typed, answers, regexp.MustCompile(`token: (\S+)`))
	// Prompts wait without a newline; the menu is drawn twice (Ink redraws),
	// and each answer fires once.
	term.run(strings.NewReader("\x1b[2J\x1b[1;1H● 1. Sign in with Google\r\n\x1b[1;1H● 1. Sign in with Google\r\n" +
		"Opening the browser. Do you want to continue? \x1b[?25l"))
	if got := typed.String(); got != "\ry\r" {
		t.Errorf("typed %q, want each answer once, in order", got)
	}
	select {
	case v := <-term.ev.captured:
		t.Errorf("captured %q before any token was printed", v)
	default:
	}
	term2 := newTerminal(typed, nil, regexp.MustCompile(`token: (\S+)`))
	term2.run(strings.NewReader("Your token: sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123\r\n"))
	if v := <-term2.ev.captured; v != "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz0123" {
		t.Errorf("captured %q", v)
	}
	for _, l := range term2.Lines() {
		if strings.Contains(l, "abcdefghij") {
			t.Errorf("kept line %q holds the token", l)
		}
	}
}

func TestRedactLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Visit https://auth.openai.com/oauth/authorize?code=abc&state=def", "Visit https://auth.openai.com/oauth/authorize?code=[redacted]&state=[redacted]"},
		{"Paste code here: 4f9c2b1e7d8a6f5e3c2b1a0d9e8f7c6b#state", "Paste code here: [redacted]"},
		{"Error: network unreachable (os error 101)", "Error: network unreachable (os error 101)"},
		{"Opening authentication page in your browser", "Opening authentication page in your browser"},
	}
	for _, tt := range tests {
		if got := redactLine(tt.in); got != tt.want {
			t.Errorf("redactLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestIsLoopbackURL(t *testing.T) {
	for u, want := range map[string]bool{
		"http://localhost:1455/auth/callback": true, "http://127.0.0.1:8085/oauth2callback": true,
		"http://[::1]:3000/x": true, "https://auth.openai.com/oauth/authorize": false, "https://claude.ai/x": false,
	} {
		if got := isLoopbackURL(u); got != want {
			t.Errorf("isLoopbackURL(%q) = %v, want %v", u, got, want)
		}
	}
}
