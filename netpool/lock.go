package netpool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	mc "github.com/master-controller/mc"
)

// LockDir holds a lock file per bridge, which tells Down whether a
// controller is using the bridge.
const LockDir = "/run/master-controller"

// LockPath is the lock file of the bridge named bridge, below LockDir.
func LockPath(bridge string) string { return filepath.Join(LockDir, "bridge-"+bridge+".lock") }

// lock opens the bridge's lock file and locks it (flock's how).
func (p *Pool) lock(how int) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	f, err := os.OpenFile(LockPath(p.cfg.Bridge), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock bridge %s: %w", p.cfg.Bridge, err)
	}
	return f, nil
}

// Use marks the bridge as used by this process, until the file it returns
// is closed or the process exits (a shared lock on the bridge's lock file):
// Down refuses meanwhile. It waits while a Down is removing the bridge. A
// controller uses its bridge from before Setup for as long as it runs.
func (p *Pool) Use() (*os.File, error) { return p.lock(unix.LOCK_SH) }

// exclusive takes the bridge for Down: ECONFLICT (bridge_in_use) while a
// process uses it (Use). Closing the file gives it back.
func (p *Pool) exclusive() (*os.File, error) {
	f, err := p.lock(unix.LOCK_EX | unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, mc.Errorf(mc.ECONFLICT, mc.ReasonBridgeInUse,
			"a running controller uses bridge %s: stop it first (it destroys its machines when it stops)", p.cfg.Bridge)
	}
	return f, err
}
