package agent

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/internal/procfs"
)

// child is one supervised process (Xvnc, Chromium). Exited is closed once the
// process has been waited for; Err then holds its exit error.
type child struct {
	name   string
	pid    int
	signal func(syscall.Signal) error
	Exited chan struct{}
	Err    error

	mu   sync.Mutex
	tail []string // last lines of output, for start-up failures
}

// startChild starts cmd in the agent's process group, with SIGKILL as its
// parent-death signal so an agent killed hard does not leave it behind.
// onLine, when set, sees every output line (stdout and stderr).
func startChild(name string, cmd *exec.Cmd, onLine func(string)) (*child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	c := &child{name: name, Exited: make(chan struct{}),
		signal: func(sig syscall.Signal) error { return cmd.Process.Signal(sig) }}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, err
	}
	c.pid = cmd.Process.Pid
	go c.scan(pr, onLine)
	go func() {
		c.Err = cmd.Wait()
		pw.Close()
		close(c.Exited)
	}()
	return c, nil
}

// startBrowserChild starts argv (an absolute path) through the machine's
// launcher, under the browser's uid, with extra as its fds 3, 4, …
func startBrowserChild(l *confine.Launcher, name string, argv, env []string, dir string, extra []*os.File, onLine func(string)) (*child, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pid, exited, err := l.Start(argv, env, dir, append([]*os.File{null, pw, pw}, extra...))
	null.Close()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	c := &child{name: name, pid: pid, Exited: make(chan struct{}),
		signal: func(sig syscall.Signal) error { return l.Signal(pid, sig) }}
	go c.scan(pr, onLine)
	go func() {
		ws := <-exited
		if ws.Exited() && ws.ExitStatus() == 0 {
			c.Err = nil
		} else {
			c.Err = &browserExit{ws}
		}
		close(c.Exited)
	}()
	return c, nil
}

// browserExit is the exit of a process started through the launcher.
type browserExit struct{ ws syscall.WaitStatus }

func (e *browserExit) Error() string {
	if e.ws.Signaled() {
		return "signal: " + e.ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(e.ws.ExitStatus())
}

// scan keeps the last lines of output for Tail and hands each to onLine.
func (c *child) scan(r io.ReadCloser, onLine func(string)) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		if len(c.tail) == 10 {
			c.tail = c.tail[1:]
		}
		c.tail = append(c.tail, line)
		c.mu.Unlock()
		if onLine != nil {
			onLine(line)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Tail returns the last lines the process wrote, joined.
func (c *child) Tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, " | ")
}

// Alive reports whether the process has not exited.
func (c *child) Alive() bool {
	select {
	case <-c.Exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL, and waits for exit.
func (c *child) Stop(log *slog.Logger, grace time.Duration) {
	if !c.Alive() {
		return
	}
	_ = c.signal(syscall.SIGTERM)
	select {
	case <-c.Exited:
		return
	case <-time.After(grace):
	}
	log.Warn("child did not stop in time, killing", "proc", c.name)
	_ = c.signal(syscall.SIGKILL)
	<-c.Exited
}

// killStrays sends SIGKILL to every other process whose environment sets HOME
// to home, and waits up to two seconds for them to be gone. These are the
// machine's processes that left the agent's process group: Chromium 156
// starts chrome_crashpad_handler in a session of its own (no command-line
// flag stops that without breaking Chromium; see chromiumArgs), and login
// commands run in sessions of their own.
func killStrays(home string) []int {
	pids := procfs.HomePids(home)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(procfs.HomePids(home)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return pids
}
