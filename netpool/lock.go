package netpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	mc "github.com/master-controller/mc"
)

// LockDir holds a lock file per bridge, which tells Down whether a
// controller is using the bridge.
const LockDir = "/run/master-controller"

// LockPath is the lock file of the bridge named bridge, below LockDir.
func LockPath(bridge string) string { return filepath.Join(LockDir, "bridge-"+bridge+".lock") }

// lock opens the bridge's lock file and locks it (flock's how), as a raw
// descriptor (an *os.File's finalizer would give the lock back once the
// file is unreachable); release closes it.
func (p *Pool) lock(how int) (release func(), err error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	fd, err := unix.Open(LockPath(p.cfg.Bridge), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	if err := unix.Flock(fd, how); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	return func() { unix.Close(fd) }, nil
}

// Use marks the bridge as used by this process (a shared lock on the
// bridge's lock file) until release is called or the process exits: Down
// refuses meanwhile. While a Down is removing the bridge it waits, until
// ctx ends. A controller uses its bridge from before Setup for as long as
// it runs.
func (p *Pool) Use(ctx context.Context) (release func(), err error) {
	for {
		release, err := p.lock(unix.LOCK_SH | unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return release, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock bridge %s: a network down holds it: %w", p.cfg.Bridge, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exclusive takes the bridge for Down: ECONFLICT (bridge_in_use) while a
// process uses it (Use). release gives it back.
func (p *Pool) exclusive() (release func(), err error) {
	release, err = p.lock(unix.LOCK_EX | unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, mc.Errorf(mc.ECONFLICT, mc.ReasonBridgeInUse,
			"a running controller uses bridge %s: stop it first (it destroys its machines when it stops)", p.cfg.Bridge)
	}
	return release, err
}
