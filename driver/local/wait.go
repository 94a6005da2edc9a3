package local

import (
	"context"
	"fmt"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/netpool"
)

// Wait blocks until machine id's agent has exited (nil, or
// mc.MachineOOMError when its cgroup had an OOM kill), ctx ends (ctx.Err())
// or the machine is unknown (ENOTFOUND). For an agent this process started
// it waits on the process itself; for one adopted from an earlier
// controller it waits on a pidfd. Either way an exit is seen at once.
// Errors: ENOTFOUND, EUNAVAILABLE (machine_oom).
func (d *Driver) Wait(ctx context.Context, id string) error {
	if p := d.proc(id); p != nil {
		select {
		case <-p.exited:
			if p.oom {
				return mc.MachineOOMError(id)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !validID(id) {
		return notFound(id)
	}
	st, err := d.readState(id)
	if err != nil {
		return err
	}
	if st == nil {
		if _, err := d.Inspect(ctx, id); err != nil {
			return err
		}
		return nil // remains without state: nothing runs
	}
	if st.PID == 0 {
		return nil
	}
	if err := waitExit(ctx, st.PID, st.StartTicks); err != nil {
		return fmt.Errorf("wait for machine %s: %w", id, err)
	}
	if d.oomKills(id) > 0 {
		return mc.MachineOOMError(id)
	}
	return nil
}

// oomKills is the number of OOM kills in machine id's cgroup (0 when it has
// none: unconfined, or already removed).
func (d *Driver) oomKills(id string) int {
	if !d.confined {
		return 0
	}
	return cgroupOf(d.cgroupV, d.cfg.CgroupParent, netpool.Hash(id)).oomKills()
}
