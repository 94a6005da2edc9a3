// Package xvnctest starts a real TigerVNC server (Xvnc) for tests.
package xvnctest

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

// StartXvnc starts Xvnc on 127.0.0.1 with VNC authentication by password
// (its first 8 bytes) and a screen of w×h, and returns its address once it
// accepts connections. It is stopped at the end of the test. Without Xvnc
// or vncpasswd the test is skipped with one line, or fails under CI=true.
func StartXvnc(tb testing.TB, password mc.Secret, w, h int) netip.AddrPort {
	tb.Helper()
	need := func(name, pkg string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			testutil.SkipOrFail(tb, "%s not found (package %s)", name, pkg)
		}
		return p
	}
	xvnc := need("Xvnc", "tigervnc-standalone-server")
	vncpasswd := need("vncpasswd", "tigervnc-tools")
	dir := tb.TempDir()
	cmd := exec.Command(vncpasswd, "-f")
	cmd.Stdin = bytes.NewReader([]byte(password.Reveal() + "\n"))
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("vncpasswd: %v", err)
	}
	pwFile := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pwFile, out, 0o600); err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// A display number unlikely to collide with other tests' (-displayfd
	// would be better, but Xvnc then needs more set-up).
	display := ":" + strconv.Itoa(400+port%500)
	x := exec.Command(xvnc, display, "-interface", "127.0.0.1", "-rfbport", strconv.Itoa(port),
		"-rfbauth", pwFile, "-geometry", strconv.Itoa(w)+"x"+strconv.Itoa(h), "-SecurityTypes", "VncAuth",
		"-nolisten", "tcp", "-NeverShared=0", "-AlwaysShared=1")
	x.Env = append(os.Environ(), "HOME="+dir)
	if err := x.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { x.Process.Kill(); x.Wait() })
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	testutil.WaitFor(tb, 15*time.Second, "Xvnc listening on "+addr.String(), func() error {
		c, err := net.Dial("tcp", addr.String())
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr
}
