package agent

import (
	"bufio"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/master-controller/mc/internal/procfs"
)

// child is one supervised process (Xvnc, Chromium). Exited is closed once the
// process has been waited for; Err then holds its exit error.
type child struct {
	name   string
	cmd    *exec.Cmd
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
	c := &child{name: name, cmd: cmd, Exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(pr)
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
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		c.Err = cmd.Wait()
		pw.Close()
		close(c.Exited)
	}()
	return c, nil
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
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.Exited:
		return
	case <-time.After(grace):
	}
	log.Warn("child did not stop in time, killing", "proc", c.name)
	_ = c.cmd.Process.Kill()
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
