// Package procfs reads what Linux's /proc says of processes: a process's
// state, process group and start time, which live processes belong to a
// process group or carry a given HOME in their environment, and the TCP
// sockets that listen in a process's network namespace. The local driver,
// the machine agent and the end-to-end tests find a machine's processes with
// it.
package procfs

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Stat is what /proc/<pid>/stat says of a process.
type Stat struct {
	// State is the state letter: R, S, D, T, Z (zombie), X (dead), ...
	State byte
	// PGRP is the process group id.
	PGRP int
	// StartTicks is when the process started, in clock ticks after boot;
	// with the pid it names one process, as pids are reused.
	StartTicks uint64
}

// Exited reports whether the process has exited (a zombie waits for its
// parent to reap it).
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' }

// ReadStat parses /proc/<pid>/stat; ok is false when there is no such
// process.
func ReadStat(pid int) (s Stat, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	fs := bytes.Fields(b[i+1:])
	if len(fs) < 20 {
		return Stat{}, false
	}
	pgrp, _ := strconv.Atoi(string(fs[2]))
	start, _ := strconv.ParseUint(string(fs[19]), 10, 64)
	return Stat{State: fs[0][0], PGRP: pgrp, StartTicks: start}, true
}

// Alive reports whether pid is a process that has not exited and, unless
// startTicks is 0, that started at startTicks (so not a later process that
// reuses the pid).
func Alive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	s, ok := ReadStat(pid)
	return ok && !s.Exited() && (startTicks == 0 || s.StartTicks == startTicks)
}

// pids lists the pids in /proc.
func pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// GroupMembers lists the live processes of process group pgid that started
// no earlier than since (start ticks; 0 for any), so that a group id reused
// long after a machine died is never touched. It lists none for pgid 0 or 1.
func GroupMembers(pgid int, since uint64) []int {
	if pgid <= 1 {
		return nil
	}
	var members []int
	for _, pid := range pids() {
		s, ok := ReadStat(pid)
		if ok && s.PGRP == pgid && !s.Exited() && s.StartTicks >= since {
			members = append(members, pid)
		}
	}
	return members
}

// HomePids lists the live processes other than this one whose environment
// sets HOME to home: a machine's processes, including any that left its
// process group (Chromium's crash handler starts a session of its own).
func HomePids(home string) []int {
	want := []byte("HOME=" + home + "\x00")
	self := os.Getpid()
	var found []int
	for _, pid := range pids() {
		if pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue
		}
		if (bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...))) && Alive(pid, 0) {
			found = append(found, pid)
		}
	}
	return found
}

// PSS sums the proportional set size of pids in bytes (Pss in
// /proc/<pid>/smaps_rollup) and says how many of them it counted (a process
// gone meanwhile is not).
func PSS(pids []int) (total int64, n int) {
	for _, pid := range pids {
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "Pss:" {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				total += kb << 10
				n++
			}
		}
		f.Close()
	}
	return total, n
}

// Listener is a listening TCP socket.
type Listener struct {
	// Addr is the local address and port.
	Addr netip.AddrPort
	// Inode is the socket's inode number, as /proc/<pid>/fd links name it
	// ("socket:[Inode]").
	Inode string
}

// TCPListeners lists the listening TCP sockets (IPv4 and IPv6) of the
// network namespace of process pid, as ss -ltn would inside it.
func TCPListeners(pid int) ([]Listener, error) {
	var ls []Listener
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + f)
		if err != nil {
			return nil, err
		}
		ls = append(ls, parseTCPListeners(string(b))...)
	}
	return ls, nil
}

// parseTCPListeners parses the text of /proc/net/tcp or tcp6.
func parseTCPListeners(text string) []Listener {
	var ls []Listener
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
			continue
		}
		hexAddr, hexPort, ok := strings.Cut(f[1], ":")
		port, err := strconv.ParseUint(hexPort, 16, 16)
		raw, herr := hex.DecodeString(hexAddr)
		if !ok || err != nil || herr != nil || (len(raw) != 4 && len(raw) != 16) {
			continue
		}
		// The address is in 32-bit words of host (little-endian) order.
		for i := 0; i < len(raw); i += 4 {
			raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
		}
		addr, _ := netip.AddrFromSlice(raw)
		ls = append(ls, Listener{Addr: netip.AddrPortFrom(addr, uint16(port)), Inode: f[9]})
	}
	return ls
}

// SocketInodes returns the inodes of the sockets that pids hold open (a
// process gone meanwhile holds none).
func SocketInodes(pids []int) map[string]bool {
	inodes := map[string]bool{}
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			l, _ := os.Readlink(dir + "/" + fd.Name())
			if in, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	return inodes
}
