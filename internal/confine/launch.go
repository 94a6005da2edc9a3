package confine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The launcher protocol: the agent runs without any privilege, under the
// machine's agent uid, and cannot start the browser under the browser's
// uid itself. It asks the machine's init, which can, over a SOCK_SEQPACKET
// socket pair (the agent's end is its LauncherFD): one JSON message per
// packet, file descriptors beside a start request. Init starts only under
// the browser's uid, with no new privileges and an empty bounding set, and
// signals only processes it started for the agent.

// LauncherFD is the agent's file descriptor of the launcher socket.
const LauncherFD = 3

// launchMsg is one message either way.
type launchMsg struct {
	// Op is "start", "signal" (agent → init), "started", "error", "exit"
	// (init → agent).
	Op   string   `json:"op"`
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	PID  int      `json:"pid,omitempty"`
	// Signal is the signal of "signal"; Status the wait status of "exit".
	Signal int    `json:"signal,omitempty"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func send(fd int, m launchMsg, files []int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		oob = unix.UnixRights(files...)
	}
	return unix.Sendmsg(fd, b, oob, nil, 0)
}

func recv(fd int) (launchMsg, []int, error) {
	var m launchMsg
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return m, nil, err
	}
	if n == 0 {
		return m, nil, errors.New("launcher closed")
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, c := range cmsgs {
				if r, err := unix.ParseUnixRights(&c); err == nil {
					fds = append(fds, r...)
				}
			}
		}
	}
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		for _, f := range fds {
			unix.Close(f)
		}
		return m, nil, fmt.Errorf("launcher message: %w", err)
	}
	return m, fds, nil
}

// Launcher is the agent's end of the launcher socket.
type Launcher struct {
	fd int

	start sync.Mutex // one start request at a time
	mu    sync.Mutex
	reply chan launchMsg
	exits map[int]chan syscall.WaitStatus
	err   error // set when the socket ends
}

// NewLauncher uses fd (a SOCK_SEQPACKET socket to the machine's init).
func NewLauncher(fd int) *Launcher {
	l := &Launcher{fd: fd, reply: make(chan launchMsg, 1), exits: map[int]chan syscall.WaitStatus{}}
	go l.read()
	return l
}

func (l *Launcher) read() {
	for {
		m, fds, err := recv(l.fd)
		for _, f := range fds {
			unix.Close(f)
		}
		if err != nil {
			l.mu.Lock()
			l.err = err
			for pid, ch := range l.exits {
				ch <- syscall.WaitStatus(0x9) // as killed: init is gone, and the machine with it
				delete(l.exits, pid)
			}
			l.mu.Unlock()
			close(l.reply)
			return
		}
		switch m.Op {
		case "started", "error":
			l.reply <- m
		case "exit":
			l.mu.Lock()
			ch := l.exits[m.PID]
			delete(l.exits, m.PID)
			l.mu.Unlock()
			if ch != nil {
				ch <- syscall.WaitStatus(m.Status)
			}
		}
	}
}

// Start asks init to start argv under the browser's uid with env, in dir,
// with files as its fds 0, 1, 2, 3… It returns the pid and a channel that
// receives its wait status once it has exited.
func (l *Launcher) Start(argv, env []string, dir string, files []*os.File) (int, <-chan syscall.WaitStatus, error) {
	l.start.Lock()
	defer l.start.Unlock()
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if err != nil {
		return 0, nil, fmt.Errorf("launch %s: %w", argv[0], err)
	}
	// The exit channel exists before the start: the exit may come right
	// after "started".
	ch := make(chan syscall.WaitStatus, 1)
	if err := send(l.fd, launchMsg{Op: "start", Argv: argv, Env: env, Dir: dir}, fds); err != nil {
		return 0, nil, fmt.Errorf("launch %s: %w", argv[0], err)
	}
	m, ok := <-l.reply
	if !ok {
		return 0, nil, fmt.Errorf("launch %s: launcher closed", argv[0])
	}
	if m.Op == "error" {
		return 0, nil, fmt.Errorf("launch %s: %s", argv[0], m.Error)
	}
	l.mu.Lock()
	l.exits[m.PID] = ch
	l.mu.Unlock()
	return m.PID, ch, nil
}

// Signal asks init to send sig to pid, a process it started.
func (l *Launcher) Signal(pid int, sig syscall.Signal) error {
	return send(l.fd, launchMsg{Op: "signal", PID: pid, Signal: int(sig)}, nil)
}

// launchServer is init's end: it starts processes for the agent under the
// browser's credentials, from the thread that dropped the bounding set.
type launchServer struct {
	fd      int
	uid     int
	gid     int
	started map[int]bool
}

// handle serves one request; it runs on init's locked thread.
func (s *launchServer) handle(m launchMsg, fds []int) {
	defer func() {
		for _, f := range fds {
			unix.Close(f)
		}
	}()
	switch m.Op {
	case "signal":
		if s.started[m.PID] {
			_ = syscall.Kill(m.PID, syscall.Signal(m.Signal))
		}
	case "start":
		pid, err := s.start(m, fds)
		if err != nil {
			_ = send(s.fd, launchMsg{Op: "error", Error: err.Error()}, nil)
			return
		}
		s.started[pid] = true
		_ = send(s.fd, launchMsg{Op: "started", PID: pid}, nil)
	}
}

func (s *launchServer) start(m launchMsg, fds []int) (int, error) {
	if len(m.Argv) == 0 || len(fds) < 3 {
		return 0, errors.New("start needs a command and fds 0, 1 and 2")
	}
	files := make([]uintptr, len(fds))
	for i, f := range fds {
		files[i] = uintptr(f)
	}
	return syscall.ForkExec(m.Argv[0], m.Argv, &syscall.ProcAttr{
		Dir: m.Dir, Env: m.Env, Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid), Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		},
	})
}

// exited tells the agent that pid, started for it, has exited.
func (s *launchServer) exited(pid int, ws syscall.WaitStatus) {
	if !s.started[pid] {
		return
	}
	delete(s.started, pid)
	_ = send(s.fd, launchMsg{Op: "exit", PID: pid, Status: int(ws)}, nil)
}
