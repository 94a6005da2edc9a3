package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/netpool"
)

// Destroy ends machine id's process group (SIGTERM, StopGrace, SIGKILL) and
// any process left in its namespace, removes its veth and namespace, releases
// its lease and removes its temporary directory and its directory. It works from what is on the host, so
// it also removes machines of an earlier controller and partial creates; a
// machine that is not there is fine.
// Errors: EINTERNAL when something could not be removed (the rest still is).
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if !validID(id) {
		return nil // nothing by that name can exist
	}
	unlock := d.lock(id)
	defer unlock()
	return d.destroyLocked(ctx, id)
}

func (d *Driver) destroyLocked(ctx context.Context, id string) error {
	start := time.Now()
	st, err := d.readState(id)
	if errors.Is(err, errOtherMachine) {
		// The host names are another machine's: only the lease is ours.
		if err := d.pool.Release(ctx, id); err != nil {
			return fmt.Errorf("destroy machine %s: %w", id, err)
		}
		return nil
	}
	if err != nil {
		d.log.Warn("destroy machine: unreadable state", mc.LogMachineID, id, mc.LogError, err)
	}
	var errs []error
	found := st != nil

	// Processes first: a namespace with processes in it outlives its name.
	if st != nil && st.PGID > 0 {
		if !killGroup(ctx, st.PGID, st.StartTicks, d.cfg.StopGrace) {
			errs = append(errs, fmt.Errorf("process group %d survives SIGKILL", st.PGID))
		}
	}
	if p := d.proc(id); p != nil {
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
			// The agent was signalled above; a group that was never
			// recorded (a crash between Start and writeState) is killed here.
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		found = true
	}
	// Processes that left the group but carry the machine's home.
	if st != nil {
		if pids := procfs.HomePids(filepath.Join(d.MachineDir(id), "home")); len(pids) > 0 && !killPids(ctx, pids) {
			errs = append(errs, fmt.Errorf("processes %v of the machine survive SIGKILL", pids))
		}
	}
	ns, _ := netpool.Names(id)
	if hasNS, hasVeth := netpool.Exists(id); hasNS || hasVeth {
		found = true
		if pids, err := netpool.Pids(ns); err != nil {
			errs = append(errs, err)
		} else if len(pids) > 0 && !killPids(ctx, pids) {
			errs = append(errs, fmt.Errorf("processes %v survive in namespace %s", pids, ns))
		}
		if err := netpool.Detach(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	// A confined machine: its PID namespace ended with its init (killed
	// above); nothing may be left in its cgroup.
	if st != nil && st.Cgroup != 0 {
		cg := &cgroup{version: st.Cgroup, dirs: st.CgroupDirs}
		if len(cg.dirs) == 0 {
			cg = cgroupOf(st.Cgroup, d.cfg.CgroupParent, netpool.Hash(id))
		}
		if pids := cg.procs(); len(pids) > 0 && !killPids(ctx, pids) {
			errs = append(errs, fmt.Errorf("processes %v survive in the machine's cgroup", pids))
		}
		if !waitFor(ctx, 2*time.Second, func() bool { return len(cg.procs()) == 0 }) {
			errs = append(errs, fmt.Errorf("the machine's cgroup still has processes %v", cg.procs()))
		} else if err := cg.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if st != nil && st.PID > 0 && st.Cgroup == 0 && st.SocketDir == "" {
		removeDeadXSocket(d.cfg.DisplayBase + st.Slot)
	}
	if st != nil && st.SocketDir != "" && filepath.Dir(st.SocketDir) == d.cfg.SocketDir {
		if err := os.RemoveAll(st.SocketDir); err != nil {
			errs = append(errs, fmt.Errorf("remove socket dir: %w", err))
		}
	}
	owner := id
	if st != nil {
		owner = leaseOwner(id, st.SessionID)
	}
	if err := d.pool.Release(ctx, owner); err != nil {
		errs = append(errs, err)
	}
	if err := d.store.Release(ctx, uidPool, owner); err != nil {
		errs = append(errs, fmt.Errorf("release uid of %s: %w", id, err))
	}
	// The temporary directory before the machine directory that names it.
	tmpDir := d.MachineTmpDir(id)
	if st != nil && st.TmpDir != "" {
		tmpDir = st.TmpDir
	}
	if err := d.removeTmpDir(tmpDir, d.MachineDir(id)); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(d.MachineDir(id)); err != nil {
		errs = append(errs, fmt.Errorf("remove directory: %w", err))
	}
	d.mu.Lock()
	delete(d.procs, id)
	d.mu.Unlock()

	if err := errors.Join(errs...); err != nil {
		d.log.Error("destroy machine", mc.LogMachineID, id, mc.LogError, err)
		return fmt.Errorf("destroy machine %s: %w", id, err)
	}
	if found {
		d.log.Info("machine destroyed", mc.LogMachineID, id, "took_ms", time.Since(start).Milliseconds())
	}
	return nil
}

// removeTmpDir removes a machine's temporary directory when it is this
// machine's: a directory of this user that names machineDir (or names
// nothing: a Create that died before writing the name). Anything else at
// that path is left alone and logged.
func (d *Driver) removeTmpDir(tmpDir, machineDir string) error {
	fi, err := os.Lstat(tmpDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove tmp dir: %w", err)
	}
	owner, err := os.ReadFile(filepath.Join(tmpDir, tmpOwnerFile))
	ours := fi.IsDir() && ownedByMe(fi) &&
		(errors.Is(err, fs.ErrNotExist) || strings.TrimSpace(string(owner)) == machineDir)
	if !ours {
		d.log.Warn("machine tmp dir is not this machine's; left alone", "dir", tmpDir)
		return nil
	}
	if err := os.RemoveAll(tmpDir); err != nil {
		return fmt.Errorf("remove tmp dir: %w", err)
	}
	return nil
}

// ownedByMe reports whether fi's owner is this process's effective user.
func ownedByMe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// removeDeadXSocket removes the X socket /tmp/.X11-unix/X<display> when
// nothing listens on it: an Xvnc killed with SIGKILL leaves it behind (with
// -displayfd it writes no lock file). A live server's socket answers and is
// left alone.
func removeDeadXSocket(display int) {
	sock := "/tmp/.X11-unix/X" + strconv.Itoa(display)
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err == nil {
		c.Close()
		return
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		_ = os.Remove(sock)
	}
}
