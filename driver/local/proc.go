package local

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/master-controller/mc/internal/procfs"
	"golang.org/x/sys/unix"
)

// killGroup ends process group pgid: SIGTERM, up to grace for it to empty,
// then SIGKILL and up to two seconds more. It reports whether the group is
// empty at the end.
func killGroup(ctx context.Context, pgid int, since uint64, grace time.Duration) bool {
	if len(procfs.GroupMembers(pgid, since)) == 0 {
		return true
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if waitFor(ctx, grace, func() bool { return len(procfs.GroupMembers(pgid, since)) == 0 }) {
		return true
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return waitFor(ctx, 2*time.Second, func() bool { return len(procfs.GroupMembers(pgid, since)) == 0 })
}

// killPids sends SIGKILL to each pid and waits up to two seconds for all to
// be gone.
func killPids(ctx context.Context, pids []int) bool {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return waitFor(ctx, 2*time.Second, func() bool {
		for _, pid := range pids {
			if procfs.Alive(pid, 0) {
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
		for procfs.Alive(pid, startTicks) {
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
	if !procfs.Alive(pid, startTicks) {
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
