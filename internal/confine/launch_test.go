package confine

import (
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLauncher runs the launcher protocol over a real socket pair: a start
// with fds (output comes back through the pipe), the exit status, a signal
// to a started process, and a refusal (no command).
func TestLauncher(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the launcher sets credentials: needs root")
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	srv := &launchServer{fd: pair[0], uid: 65534, gid: 65534, started: map[int]bool{}}
	go func() {
		for {
			m, fds, err := recv(srv.fd)
			if err != nil {
				return
			}
			srv.handle(m, fds)
			if m.Op == "start" {
				// Reap here as init does, and report.
				for pid := range srv.started {
					go func(pid int) {
						var ws syscall.WaitStatus
						if _, err := syscall.Wait4(pid, &ws, 0, nil); err == nil {
							_ = send(srv.fd, launchMsg{Op: "exit", PID: pid, Status: int(ws)}, nil)
						}
					}(pid)
					delete(srv.started, pid)
					srv.started[-pid] = true // remembered for signal below
				}
			}
			if m.Op == "signal" && srv.started[-m.PID] {
				_ = syscall.Kill(m.PID, syscall.Signal(m.Signal))
			}
		}
	}()
	l := NewLauncher(pair[1])

	r, w, _ := os.Pipe()
	null, _ := os.Open(os.DevNull)
	pid, exited, err := l.Start([]string{"/bin/sh", "-c", "id -u; exit 3"}, []string{"PATH=/usr/bin:/bin"}, "/", []*os.File{null, w, w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	ws := <-exited
	if strings.TrimSpace(string(out)) != "65534" || ws.ExitStatus() != 3 || pid <= 0 {
		t.Errorf("started process: pid %d, output %q, status %d; want uid 65534, status 3", pid, out, ws.ExitStatus())
	}

	pid, exited, err = l.Start([]string{"/bin/sleep", "30"}, nil, "/", []*os.File{null, null, null})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Signal(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ws := <-exited:
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("signalled process: status %v, want killed", ws)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the signalled process did not exit")
	}

	if _, _, err := l.Start([]string{"/nonexistent"}, nil, "/", []*os.File{null, null, null}); err == nil {
		t.Error("start of a missing binary succeeded")
	}
}
