package e2e_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server is the master-controller binary running as a separate process.
type server struct {
	URL  string
	api  client
	cmd  *exec.Cmd
	logs *syncBuffer // stderr: the JSON log
	done chan struct{}
}

var servingRE = regexp.MustCompile(`serving at (http://\S+)`)

// startServer starts `master-controller serve` with env (MC_* settings) and
// waits until it serves. It is stopped (SIGTERM, then SIGKILL) when the test
// ends, unless it has already exited.
func startServer(tb testing.TB, env map[string]string) *server {
	tb.Helper()
	cmd := exec.Command(serverBinary(tb), "serve")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	s := &server{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	// The server dies with the test binary; its machines do not (they are
	// process groups of their own, left for the next start's reconcile).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
	go func() { _ = cmd.Wait(); close(s.done) }()
	tb.Cleanup(func() {
		s.stop(tb)
		if tb.Failed() {
			tb.Logf("server %d log (last 8 KiB):\n%s", cmd.Process.Pid, tail(s.logs.String(), 8<<10))
		}
	})
	select {
	case s.URL = <-urlc:
	case <-s.done:
		tb.Fatalf("server exited at start: %s", s.logs.String())
	case <-time.After(60 * time.Second):
		tb.Fatalf("server did not serve within 60 s: %s", s.logs.String())
	}
	s.api = client{url: s.URL, key: env["MC_API_KEYS"]}
	return s
}

// stop sends SIGTERM and waits (bounded), then SIGKILL.
func (s *server) stop(tb testing.TB) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		tb.Errorf("server did not stop within 30 s of SIGTERM")
	}
}

// kill sends SIGKILL, like a crash, and waits until the process is gone.
func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// waitLog waits until the server logs a JSON line whose msg is msg, for at
// most timeout, and returns the line's fields.
func (s *server) waitLog(tb testing.TB, msg string, timeout time.Duration) map[string]any {
	tb.Helper()
	var found map[string]any
	err := eventually(time.Now().Add(timeout), 20*time.Millisecond, func() error {
		for _, l := range strings.Split(s.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
				found = rec
				return nil
			}
		}
		select {
		case <-s.done:
			return nil
		default:
		}
		return errorString("not yet")
	})
	if found == nil {
		tb.Fatalf("server logged no %q line within %s (%v)", msg, timeout, err)
	}
	return found
}
