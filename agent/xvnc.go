package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/master-controller/mc"
)

// xauthority returns an X authority file with one MIT-MAGIC-COOKIE-1 entry for
// display (family "wild", any host), so that only processes that hold the
// file can connect to the X server: its filesystem socket is visible to the
// whole host even when the machine has a network namespace of its own.
func xauthority(display int, cookie []byte) []byte {
	var b []byte
	put := func(s []byte) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint16(b, 0xffff) // FamilyWild
	put(nil)
	put([]byte(strconv.Itoa(display)))
	put([]byte("MIT-MAGIC-COOKIE-1"))
	put(cookie)
	return b
}

// xvncArgs is Xvnc's command line. -interface confines the VNC listener to
// the machine's IP, or, for a unix: VNCListen, -rfbunixpath puts it on a
// socket (0600) and -rfbport -1 opens no TCP port at all; -nolisten tcp
// keeps X11 itself off the network; -displayfd 3 tells the agent when the
// server accepts connections; -auth keeps other local users off the display.
func xvncArgs(cfg Config, passwdFile, authFile string) ([]string, error) {
	var listen []string
	if ep := mc.ParseEndpoint(cfg.VNCListen); ep.Network == "unix" {
		listen = []string{"-rfbport", "-1", "-rfbunixpath", ep.Address} // 0600 by default (-rfbunixmode 384)
	} else {
		ip, port, err := net.SplitHostPort(cfg.VNCListen)
		if err != nil {
			return nil, fmt.Errorf("parse vnc address %s: %w", cfg.VNCListen, err)
		}
		listen = []string{"-rfbport", port, "-interface", ip}
	}
	return append([]string{
		":" + strconv.Itoa(cfg.Display),
		"-geometry", fmt.Sprintf("%dx%d", cfg.Width, cfg.Height),
		"-depth", "24"}, append(listen,
		"-SecurityTypes", "VncAuth",
		"-PasswordFile", passwdFile,
		"-auth", authFile,
		"-nolisten", "tcp",
		"-AlwaysShared",
		// TigerVNC counts every connection that does not authenticate
		// (each readiness and health probe that reads the banner) and
		// blacklists the host after 5: the gateway, dialling from the same
		// address, would be refused. The port is reachable only from the
		// host (bridge isolation) and the password is random.
		"-UseBlacklist=0",
		"-desktop", "mc",
		"-displayfd", "3",
	)...), nil
}

// xvncEnv is Xvnc's whole environment. It has no TMPDIR: the X server's
// socket (/tmp/.X11-unix/X<display>) and lock file (/tmp/.X<display>-lock)
// are at fixed places that X clients and removeStaleXFiles rely on.
func xvncEnv(cfg Config) []string {
	return []string{"HOME=" + cfg.Home, "PATH=" + os.Getenv("PATH")}
}

// startXvnc starts Xvnc and returns once its display accepts connections.
func startXvnc(ctx context.Context, log *slog.Logger, cfg Config, passwdFile, authFile string) (*child, error) {
	args, err := xvncArgs(cfg, passwdFile, authFile)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(cfg.Xvnc, args...)
	cmd.Env = xvncEnv(cfg)
	cmd.ExtraFiles = []*os.File{w}
	c, err := startChild("xvnc", cmd, func(line string) { log.Debug("xvnc", "line", line) })
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("start xvnc: %w", err)
	}
	type result struct {
		line string
		err  error
	}
	ready := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		ready <- result{line, err}
	}()
	fail := func(err error) (*child, error) {
		c.Stop(log, 2*time.Second)
		return nil, err
	}
	select {
	case res := <-ready:
		if res.err != nil {
			<-c.Exited
			return fail(fmt.Errorf("start xvnc on :%d: exited before ready (%v): %s", cfg.Display, c.Err, c.Tail()))
		}
		if got := strings.TrimSpace(res.line); got != strconv.Itoa(cfg.Display) {
			return fail(fmt.Errorf("start xvnc: display %q, want %d", got, cfg.Display))
		}
		return c, nil
	case <-ctx.Done():
		return fail(fmt.Errorf("start xvnc on :%d: %w", cfg.Display, ctx.Err()))
	}
}

// newCookie returns 16 random bytes.
func newCookie() []byte {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return b
}

// removeStaleXFiles removes display's lock file and socket in /tmp when
// they are left by pid (an Xvnc that is gone): a killed X server cannot
// remove them itself. With -displayfd Xvnc writes no lock file; its socket
// is then removed when nothing listens on it. Another server's files are
// left alone.
func removeStaleXFiles(display, pid int) {
	lock := fmt.Sprintf("/tmp/.X%d-lock", display)
	sock := fmt.Sprintf("/tmp/.X11-unix/X%d", display)
	b, err := os.ReadFile(lock)
	switch {
	case err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid):
		os.Remove(sock)
		os.Remove(lock)
	case errors.Is(err, fs.ErrNotExist):
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(sock)
		}
	}
}
