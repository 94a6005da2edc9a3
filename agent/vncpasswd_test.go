package agent

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/rfb"
)

func TestObfuscateVNCPassword(t *testing.T) {
	tests := []struct {
		password string
		want     string // from TigerVNC 1.12 `vncpasswd -f`
	}{
		{"secret12", "24b5ae4ce15503c6"},
		{"secret12-and-more", "24b5ae4ce15503c6"}, // only 8 bytes count
	}
	for _, tt := range tests {
		t.Run(tt.password, func(t *testing.T) {
			if got := hex.EncodeToString(ObfuscateVNCPassword(tt.password)); got != tt.want {
				t.Errorf("ObfuscateVNCPassword(%q) = %s, want %s", tt.password, got, tt.want)
			}
		})
	}
}

// TestObfuscateVNCPasswordMatchesVncpasswd compares with the real tool for
// passwords of every length up to and beyond 8.
func TestObfuscateVNCPasswordMatchesVncpasswd(t *testing.T) {
	bin, err := exec.LookPath("vncpasswd")
	if err != nil {
		testutil.SkipOrFail(t, "vncpasswd not installed (package tigervnc-tools)")
	}
	for _, pw := range []string{"abcdef", "a1b2c3d4", "Zq_-9xY7wE", "12345678901", "\x7f\x01pass"} {
		t.Run(pw, func(t *testing.T) {
			cmd := exec.Command(bin, "-f")
			cmd.Stdin = strings.NewReader(pw)
			want, err := cmd.Output()
			if err != nil {
				t.Fatalf("vncpasswd -f: %v", err)
			}
			if got := ObfuscateVNCPassword(pw); !bytes.Equal(got, want) {
				t.Errorf("ObfuscateVNCPassword(%q) = %x, want %x", pw, got, want)
			}
		})
	}
}

func TestWriteVNCPasswordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := writeVNCPasswordFile(path, "secret12"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("mode = %v, want %v", got, want)
	}
	b, _ := os.ReadFile(path)
	if got, want := hex.EncodeToString(b), "24b5ae4ce15503c6"; got != want {
		t.Errorf("content = %s, want %s", got, want)
	}
}

func TestObfuscationIsVNCDES(t *testing.T) {
	// VNC authentication encrypts the challenge with the password as key;
	// with the fixed obfuscation key as "password" it must equal the
	// obfuscation of the challenge's halves: one DES serves both.
	var challenge [16]byte
	copy(challenge[:], "secret12secret12")
	got := rfb.EncryptChallenge(mc.SecretOf(string(vncObfuscationKey[:])), challenge)
	want := append(ObfuscateVNCPassword("secret12"), ObfuscateVNCPassword("secret12")...)
	if !bytes.Equal(got[:], want) {
		t.Errorf("EncryptChallenge = %x, want %x", got, want)
	}
}
