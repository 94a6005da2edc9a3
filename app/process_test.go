package app_test

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	serverBin string
	buildErr  error
)

// serverBinary returns the master-controller binary: $MC_TEST_SERVER, or one
// built once for this test binary.
func serverBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MC_TEST_SERVER"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mc-server-")
		if err != nil {
			buildErr = err
			return
		}
		serverBin = filepath.Join(dir, "master-controller")
		out, err := exec.Command("go", "build", "-o", serverBin, "../cmd/master-controller").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build server: %v", buildErr)
	}
	return serverBin
}

// proc is a controller running as a separate process.
type proc struct {
	URL  string
	key  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

var servingRE = regexp.MustCompile(`serving at (http://\S+)`)

// startProcess starts the server binary with env (MC_* settings) on a free
// port and waits until it serves.
func startProcess(t testing.TB, env map[string]string) *proc {
	t.Helper()
	cmd := exec.Command(serverBinary(t), "serve")
	cmd.Env = append(os.Environ(), "MC_LISTEN=127.0.0.1:0", "MC_LOG_FORMAT=json", "MC_WEB_DIR=../web")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{key: env["MC_API_KEYS"], cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
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
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case p.URL = <-urlc:
	case <-p.done:
		t.Fatalf("server exited: %s", p.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not start: %s", p.logs.String())
	}
	return p
}

// stop sends SIGTERM and waits (bounded), then SIGKILL.
func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("server did not stop on SIGTERM")
	}
}

// api returns an API client for the process.
func (p *proc) api() client { return client{url: p.URL, key: p.key} }

// metricValue returns the sum of a metric's samples on a server's /metrics
// (0 when absent).
func metricValue(t testing.TB, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
