package local

import (
	"context"
	"errors"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/netpool"
)

// Inspect reports machine id from what is on the host: its state file, its
// agent process and its namespace.
// Errors: ENOTFOUND when the host has nothing of it.
func (d *Driver) Inspect(ctx context.Context, id string) (mc.MachineStatus, error) {
	if !validID(id) {
		return mc.MachineStatus{}, notFound(id)
	}
	st, err := d.readState(id)
	if errors.Is(err, errOtherMachine) {
		return mc.MachineStatus{}, notFound(id)
	}
	if err != nil {
		return mc.MachineStatus{ID: id, Detail: "unreadable state file"}, nil
	}
	if st == nil {
		hasNS, hasVeth := netpool.Exists(id)
		switch {
		case hasNS:
			return mc.MachineStatus{ID: id, Detail: "namespace without state"}, nil
		case hasVeth:
			return mc.MachineStatus{ID: id, Detail: "veth without state"}, nil
		}
		return mc.MachineStatus{}, notFound(id)
	}
	return d.status(st), nil
}

// status reports a machine whose state file was read.
func (d *Driver) status(st *state) mc.MachineStatus {
	s := mc.MachineStatus{ID: st.ID, SessionID: st.SessionID, Pooled: st.Pooled, Machine: st.Machine, StartedAt: st.Started}
	switch {
	case st.PID == 0:
		s.Detail = "agent not started"
	case procfs.Alive(st.PID, st.StartTicks):
		s.Running = true
	case len(procfs.GroupMembers(st.PGID, st.StartTicks)) > 0:
		s.Detail = "agent exited, processes left"
	default:
		s.Detail = "agent exited"
	}
	if !s.Running && st.Namespace != "" {
		if hasNS, _ := netpool.Exists(st.ID); hasNS {
			s.Detail += "; namespace left"
		}
	}
	return s
}

func notFound(id string) error {
	return mc.Errorf(mc.ENOTFOUND, mc.ReasonMachineNotFound, "machine %s not found", id)
}
