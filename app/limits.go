package app

import (
	"fmt"
	"syscall"
)

// fdReserve is how many file descriptors the connection caps leave for
// everything else: the store, log files, the machines' processes and pipes.
const fdReserve = 1024

// RaiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit (the Go
// runtime does so too on Linux; this makes it explicit and reports it) and
// returns the limit now in force.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return lim.Cur, fmt.Errorf("raise RLIMIT_NOFILE from %d to %d: %w", lim.Cur, lim.Max, err)
		}
		lim = raised
	}
	return lim.Cur, nil
}

// ConnectionLimits derives the caps on HTTP connections and on viewer
// WebSockets from the open-file limit: fdReserve descriptors (a quarter of
// a small limit) stay for the rest of the process; of the others, half go
// to HTTP connections and half to viewers, each of which holds two (its
// WebSocket, which has left the HTTP count, and its machine's VNC stream),
// so that connections + 2 × viewers + reserve never exceed the limit.
func ConnectionLimits(nofile uint64) (conns, viewers int) {
	reserve := uint64(fdReserve)
	if nofile < 4*fdReserve {
		reserve = nofile / 4
	}
	budget := min(nofile-reserve, 1<<30)
	conns = int(budget / 2)
	viewers = int(budget / 4)
	return max(conns, 1), max(viewers, 1)
}
