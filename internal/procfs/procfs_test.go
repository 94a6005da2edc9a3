package procfs_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
)

// childEnv makes the test binary a child that waits for its stdin to close.
const childEnv = "PROC_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startChild starts a child in a process group of its own whose environment
// is env (plus the child marker) and ends it at cleanup.
func startChild(tb testing.TB, env []string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(env, childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start child: %v", err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// withoutHome is this process's environment without HOME.
func withoutHome() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HOME=") })
}

// waitExited waits until pid is a zombie (it has exited, nobody reaped it).
func waitExited(tb testing.TB, pid int) {
	tb.Helper()
	testutil.WaitFor(tb, 10*time.Second, fmt.Sprintf("process %d a zombie after SIGKILL", pid), func() error {
		s, ok := procfs.ReadStat(pid)
		if !ok {
			tb.Fatalf("process %d: no /proc entry before it was reaped", pid)
		}
		if !s.Exited() {
			return fmt.Errorf("state %c, want Z", s.State)
		}
		return nil
	})
}

func TestHomePids(t *testing.T) {
	tests := []struct {
		name string
		env  func(home string) []string
	}{
		{"HOME first", func(home string) []string { return append([]string{"HOME=" + home}, withoutHome()...) }},
		{"HOME last", func(home string) []string { return append(withoutHome(), "HOME="+home) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir() // unique to this test
			// Neither a longer HOME nor another variable ending in HOME's
			// value counts.
			other := startChild(t, append(withoutHome(), "HOME="+home+"x", "XHOME="+home))
			cmd := startChild(t, tt.env(home))
			pid := cmd.Process.Pid

			if got, want := procfs.HomePids(home), []int{pid}; !slices.Equal(got, want) {
				t.Errorf("HomePids(%s) = %v, want %v (the other child is %d)", home, got, want, other.Process.Pid)
			}
			// A child that has exited but is not reaped yet is not live.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			waitExited(t, pid)
			if got := procfs.HomePids(home); len(got) != 0 {
				t.Errorf("HomePids(%s) after the child exited = %v, want none", home, got)
			}
		})
	}
}

func TestStatAliveGroupMembers(t *testing.T) {
	cmd := startChild(t, append(withoutHome(), "HOME="+t.TempDir()))
	pid := cmd.Process.Pid
	s, ok := procfs.ReadStat(pid)
	if !ok {
		t.Fatalf("ReadStat(%d): no such process", pid)
	}
	if s.PGRP != pid || s.Exited() || s.StartTicks == 0 {
		t.Fatalf("ReadStat(%d) = %+v, want process group %d, not exited, a start time", pid, s, pid)
	}
	for _, tt := range []struct {
		start uint64
		want  bool
	}{{0, true}, {s.StartTicks, true}, {s.StartTicks + 1, false}} {
		if got := procfs.Alive(pid, tt.start); got != tt.want {
			t.Errorf("Alive(%d, %d) = %v, want %v", pid, tt.start, got, tt.want)
		}
	}
	for _, tt := range []struct {
		pgid  int
		since uint64
		want  []int
	}{
		{pid, 0, []int{pid}},
		{pid, s.StartTicks, []int{pid}},
		{pid, s.StartTicks + 1, nil},
		{1, 0, nil},
		{0, 0, nil},
	} {
		if got := procfs.GroupMembers(tt.pgid, tt.since); !slices.Equal(got, tt.want) {
			t.Errorf("GroupMembers(%d, %d) = %v, want %v", tt.pgid, tt.since, got, tt.want)
		}
	}
	if total, n := procfs.PSS([]int{pid, os.Getpid()}); n != 2 || total <= 0 {
		t.Errorf("PSS(child, self) = %d bytes over %d processes, want > 0 over 2", total, n)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitExited(t, pid)
	if procfs.Alive(pid, 0) {
		t.Errorf("Alive(%d, 0) of a zombie = true, want false", pid)
	}
	if got := procfs.GroupMembers(pid, 0); len(got) != 0 {
		t.Errorf("GroupMembers(%d, 0) with only a zombie = %v, want none", pid, got)
	}
	_ = cmd.Wait()
	if _, ok := procfs.ReadStat(pid); ok {
		t.Errorf("ReadStat(%d) after the child was reaped: ok, want no such process", pid)
	}
	if procfs.Alive(0, 0) || procfs.Alive(-1, 0) {
		t.Error("Alive(0 or -1) = true, want false")
	}
}

// TestTCPListeners: a socket this process listens on, IPv4 and IPv6, is
// among the listeners of its network namespace, with its address, port and
// the inode that this process's fds name; a connected socket is not.
func TestTCPListeners(t *testing.T) {
	var want []netip.AddrPort
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "[::1]:0" {
				continue // no IPv6 on this host
			}
			t.Fatal(err)
		}
		defer ln.Close()
		want = append(want, ln.Addr().(*net.TCPAddr).AddrPort())
	}
	c, err := net.Dial("tcp", want[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ls, err := procfs.TCPListeners(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	mine := procfs.SocketInodes([]int{os.Getpid()})
	for _, w := range want {
		i := slices.IndexFunc(ls, func(l procfs.Listener) bool { return l.Addr == w })
		if i < 0 {
			t.Errorf("listeners %v lack %v", ls, w)
		} else if !mine[ls[i].Inode] {
			t.Errorf("listener %v: inode %s not among this process's sockets", w, ls[i].Inode)
		}
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if slices.ContainsFunc(ls, func(l procfs.Listener) bool { return l.Addr == local }) {
		t.Errorf("listeners hold the connected socket %v", local)
	}
}
