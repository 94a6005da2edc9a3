package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpener: the opener (mc-agent as xdg-open or mc-open) hands its URL to
// the agent's socket, and says why when it cannot.
func TestOpener(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "mc-agent")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	op, err := startOpener(dir, exe, func(u string) error {
		if !strings.HasPrefix(u, "https://") {
			return os.ErrInvalid
		}
		got <- u
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	for _, name := range []string{"xdg-open", "mc-open"} {
		if target, err := os.Readlink(filepath.Join(op.bin, name)); err != nil || target != exe || !IsOpener("/x/"+name) {
			t.Errorf("shim %s -> %q, %v; want a link to %s", name, target, err, exe)
		}
	}
	if IsOpener("/usr/bin/mc-agent") {
		t.Error("mc-agent under its own name is not the opener")
	}

	var stderr bytes.Buffer
	if code := Opener([]string{"https://auth.openai.com/oauth/authorize?state=s"}, &stderr); code != 3 {
		t.Errorf("without %s: exit %d, want 3", OpenerEnv, code)
	}
	t.Setenv(OpenerEnv, op.sock)
	if code := Opener([]string{"https://auth.openai.com/oauth/authorize?state=s"}, &stderr); code != 0 {
		t.Fatalf("exit %d (%s), want 0", code, stderr.String())
	}
	if u := <-got; u != "https://auth.openai.com/oauth/authorize?state=s" {
		t.Errorf("agent got %q", u)
	}
	stderr.Reset()
	if code := Opener([]string{"file:///etc/passwd"}, &stderr); code != 4 || stderr.Len() == 0 {
		t.Errorf("a file URL: exit %d (%q), want 4 with a reason", code, stderr.String())
	}
	if code := Opener(nil, &stderr); code != 1 {
		t.Errorf("no URL: exit %d, want 1", code)
	}
	if st, err := os.Stat(op.sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
}
