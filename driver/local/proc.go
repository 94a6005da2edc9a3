package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procInfo is what /proc/<pid>/stat says of a process.
type procInfo struct {
	State      byte
	PGRP       int
	StartTicks uint64
}

// readProc parses /proc/<pid>/stat; ok is false when there is no such process.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	fs := bytes.Fields(b[i+1:])
	if len(fs) < 20 {
		return procInfo{}, false
	}
	pgrp, _ := strconv.Atoi(string(fs[2]))
	start, _ := strconv.ParseUint(string(fs[19]), 10, 64)
	return procInfo{State: fs[0][0], PGRP: pgrp, StartTicks: start}, true
}

// alive reports whether pid is the process that started at startTicks and
// has not exited (a zombie has exited).
func alive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	p, ok := readProc(pid)
	return ok && p.State != 'Z' && p.State != 'X' && (startTicks == 0 || p.StartTicks == startTicks)
}

// groupMembers lists the live (non-zombie) processes of process group pgid
// that started no earlier than since (start ticks), so that a group id
// reused long after the machine died is never touched.
func groupMembers(pgid int, since uint64) []int {
	if pgid <= 1 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := readProc(pid)
		if ok && p.PGRP == pgid && p.State != 'Z' && p.State != 'X' && p.StartTicks >= since {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killGroup ends process group pgid: SIGTERM, up to grace for it to empty,
// then SIGKILL and up to two seconds more. It reports whether the group is
// empty at the end.
func killGroup(ctx context.Context, pgid int, since uint64, grace time.Duration) bool {
	if len(groupMembers(pgid, since)) == 0 {
		return true
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if waitFor(ctx, grace, func() bool { return len(groupMembers(pgid, since)) == 0 }) {
		return true
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return waitFor(ctx, 2*time.Second, func() bool { return len(groupMembers(pgid, since)) == 0 })
}

// homePids lists the live processes whose environment sets HOME to home:
// a machine's processes, including any that left its process group
// (Chromium's crash handler starts a session of its own).
func homePids(home string) []int {
	want := []byte("HOME=" + home + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if (bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...))) && alive(pid, 0) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killPids sends SIGKILL to each pid and waits up to two seconds for all to
// be gone.
func killPids(ctx context.Context, pids []int) bool {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return waitFor(ctx, 2*time.Second, func() bool {
		for _, pid := range pids {
			if alive(pid, 0) {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond every 10 ms until it holds (true) or timeout passes or
// ctx ends (false).
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit blocks until pid (started at startTicks) has exited or ctx ends.
// It uses a pidfd, which becomes readable when the process exits; where
// pidfds are unavailable it polls every 100 ms.
func waitExit(ctx context.Context, pid int, startTicks uint64) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		for alive(pid, startTicks) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		return nil
	}
	defer unix.Close(fd)
	// The pidfd refers to whatever has pid now; check it is the agent.
	if !alive(pid, startTicks) {
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}
