package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunBadFlags(t *testing.T) {
	full := []string{"--listen", "127.0.0.1:1", "--token-file", "t", "--vnc-listen", "127.0.0.1:2",
		"--vnc-password-file", "p", "--display", "100", "--home", "h"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"missing flags", []string{"--display", "100"}, "missing flags"},
		{"bad geometry", append(full, "--geometry", "big"), "--geometry"},
		{"bad log level", append(full, "--log-level", "loud"), "--log-level"},
		{"extra argument", append(full, "extra"), "unexpected arguments"},
		{"tmp dir too long", append(full, "--tmp-dir", "/"+strings.Repeat("t", 62)), "--tmp-dir"},
		{"home too long for the default tmp dir", append(full[:len(full)-1], "/"+strings.Repeat("h", 60)), "--tmp-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(tt.args, &stderr); got != 2 {
				t.Errorf("exit = %d, want 2", got)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr = %q, want it to mention %q", stderr.String(), tt.want)
			}
		})
	}
}

func TestRunMissingSecretFile(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	args := []string{"--listen", "127.0.0.1:0", "--token-file", dir + "/none", "--vnc-listen", "127.0.0.1:0",
		"--vnc-password-file", dir + "/none", "--display", "100", "--home", dir}
	if got := run(args, &stderr); got != 1 {
		t.Errorf("exit = %d, want 1", got)
	}
	if !strings.Contains(stderr.String(), "read secret file") {
		t.Errorf("stderr = %q", stderr.String())
	}
}
