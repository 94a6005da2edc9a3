package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/netpool"
)

// Sweep removes what List cannot name: machine cgroups and temporary directories
// (TmpDir/mc-<hash>) of this driver whose machine directory is gone, and
// veths on this driver's bridge (and the namespaces of the same hash, with
// any process inside) that belong to no machine directory, as left by a
// directory removed by hand or a crash inside Destroy. Reconcile calls it
// after destroying the machines that no session owns. It returns the names
// it removed.
func (d *Driver) Sweep(ctx context.Context) ([]string, error) {
	removed, err := d.sweepTmpDirs()
	removed = append(removed, d.sweepCgroups(ctx)...)
	removed = append(removed, d.sweepSocketDirs()...)
	if d.mode != ModeNetns || err != nil {
		return removed, err
	}
	veths, err := netpool.Veths()
	if err != nil {
		return removed, err
	}
	var errs []error
	br := d.pool.Config().Bridge
	for _, v := range veths {
		if v.Master != br {
			continue
		}
		h := strings.TrimPrefix(v.Name, netpool.VethPrefix)
		if _, err := os.Stat(filepath.Join(d.machinesDir(), h)); err == nil {
			continue
		}
		ns := netpool.NamespacePrefix + h
		if pids, err := netpool.Pids(ns); err == nil && len(pids) > 0 {
			killPids(ctx, pids)
		}
		if err := netpool.RemoveLink(ctx, v.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := netpool.RemoveNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
			continue
		}
		d.log.Info("swept machine network without state", "veth", v.Name, "netns", ns, mc.LogReason, mc.ReasonOrphan)
		removed = append(removed, v.Name, ns)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("sweep bridge %s: %w", br, err)
	}
	return removed, nil
}

// sweepCgroups removes machine cgroups below CgroupParent whose machine
// directory is gone (killing what is left in them), as a crash inside
// Destroy can leave. A machine being created has its directory first.
func (d *Driver) sweepCgroups(ctx context.Context) []string {
	if !d.confined {
		return nil
	}
	var removed []string
	for _, h := range cgroupNames(d.cgroupV, d.cfg.CgroupParent) {
		if _, err := os.Stat(filepath.Join(d.machinesDir(), h)); err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		cg := cgroupOf(d.cgroupV, d.cfg.CgroupParent, h)
		if pids := cg.procs(); len(pids) > 0 {
			killPids(ctx, pids)
		}
		if err := cg.remove(); err != nil {
			d.log.Warn("sweep machine cgroup", "cgroup", "mc-"+h, mc.LogError, err)
			continue
		}
		d.log.Info("swept machine cgroup without state", "cgroup", "mc-"+h, mc.LogReason, mc.ReasonOrphan)
		removed = append(removed, "cgroup mc-"+h)
	}
	return removed
}

// sweepTmpDirs removes the temporary directories whose owner file names a
// machine directory of this driver that does not exist. Create makes the
// machine directory before the temporary one and Destroy removes them in the
// other order, so a live machine's is never removed.
func (d *Driver) sweepTmpDirs() ([]string, error) {
	ents, err := os.ReadDir(d.cfg.TmpDir)
	if err != nil {
		return nil, fmt.Errorf("sweep tmp dirs in %s: %w", d.cfg.TmpDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		h, ok := strings.CutPrefix(e.Name(), machineTmpPrefix)
		if !ok || len(h) != 8 || !e.IsDir() {
			continue
		}
		dir := filepath.Join(d.cfg.TmpDir, e.Name())
		owner, err := os.ReadFile(filepath.Join(dir, tmpOwnerFile))
		machineDir := filepath.Join(d.machinesDir(), h)
		if err != nil || strings.TrimSpace(string(owner)) != machineDir {
			continue // another driver's, or a Create that has just begun
		}
		if _, err := os.Stat(machineDir); err == nil || !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := d.removeTmpDir(dir, machineDir); err != nil {
			errs = append(errs, err)
			continue
		}
		d.log.Info("swept machine tmp dir without state", "dir", dir, mc.LogReason, mc.ReasonOrphan)
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// sweepSocketDirs removes userns machines' socket directories
// (SocketDir/<hash>) whose machine directory is gone.
func (d *Driver) sweepSocketDirs() []string {
	if d.mode != ModeUserns {
		return nil
	}
	ents, _ := os.ReadDir(d.cfg.SocketDir)
	var removed []string
	for _, e := range ents {
		if !e.IsDir() || len(e.Name()) != 8 {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.machinesDir(), e.Name())); err == nil {
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.cfg.SocketDir, e.Name())); err == nil {
			d.log.Info("swept socket dir without machine", "dir", e.Name(), mc.LogReason, mc.ReasonOrphan)
			removed = append(removed, filepath.Join(d.cfg.SocketDir, e.Name()))
		}
	}
	return removed
}
