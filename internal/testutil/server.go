package testutil

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// Server is the master-controller binary running as a separate process.
type Server struct {
	// URL is where it serves, from its "serving at" line.
	URL string
	// Cmd is the process.
	Cmd *exec.Cmd
	// Logs is its standard error: the log.
	Logs *SyncBuffer
	// Done is closed once the process has exited.
	Done chan struct{}
}

var servingRE = regexp.MustCompile(`serving at (http://\S+)`)

// StartServer starts `master-controller serve` (see ServerBinary) with env
// (MC_* settings) added to this process's environment, and waits up to 60 s
// until it prints the "serving at" line. When the test ends it is stopped
// (see Stop), unless it has already exited, and if the test failed the end
// of its log is logged. The server dies with the test binary; the processes
// it started do not, unless they see to it themselves.
func StartServer(tb testing.TB, env map[string]string) *Server {
	tb.Helper()
	return startServer(tb, ServerBinary(tb), env, nil)
}

// StartServerAs is StartServer under uid (and gid uid, no supplementary
// groups) instead of this process's user (root): how a test covers a
// controller that is not root. The binary is copied where uid can run it;
// what env names (the data directory, the agent) must be uid's to use.
func StartServerAs(tb testing.TB, env map[string]string, uid int) *Server {
	tb.Helper()
	dir, err := os.MkdirTemp("", "mc-server-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "master-controller")
	err = CopyFile(ServerBinary(tb), bin, 0o755)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return startServer(tb, bin, env, &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}})
}

// CopyFile copies the file src to a new file dst with mode.
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func startServer(tb testing.TB, bin string, env map[string]string, cred *syscall.Credential) *Server {
	tb.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	s := &Server{Cmd: cmd, Logs: &SyncBuffer{}, Done: make(chan struct{})}
	cmd.Stderr = s.Logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start server: %v", err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.Done) }()
	tb.Cleanup(func() {
		s.Stop(tb)
		if tb.Failed() {
			tb.Logf("server %d log (last 8 KiB):\n%s", cmd.Process.Pid, Tail(s.Logs.String(), 8<<10))
		}
	})
	select {
	case s.URL = <-urlc:
	case <-s.Done:
		tb.Fatalf("server exited at start: %s", s.Logs.String())
	case <-time.After(60 * time.Second):
		tb.Fatalf("server did not serve within 60 s: %s", s.Logs.String())
	}
	return s
}

// Stop sends SIGTERM and waits up to 30 s for the process to exit; then it
// fails tb, sends SIGKILL and waits.
func (s *Server) Stop(tb testing.TB) {
	select {
	case <-s.Done:
		return
	default:
	}
	_ = s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.Done:
	case <-time.After(30 * time.Second):
		_ = s.Cmd.Process.Kill()
		<-s.Done
		tb.Errorf("server did not stop within 30 s of SIGTERM")
	}
}

// Kill sends SIGKILL, like a crash, and waits until the process is gone.
func (s *Server) Kill() {
	_ = s.Cmd.Process.Kill()
	<-s.Done
}
