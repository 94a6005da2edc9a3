package local

import (
	"context"
	"fmt"
)

// Wait blocks until machine id's agent has exited (nil), ctx ends
// (ctx.Err()) or the machine is unknown (ENOTFOUND). For an agent this
// process started it waits on the process itself; for one adopted from an
// earlier controller it waits on a pidfd. Either way an exit is seen at once.
// Errors: ENOTFOUND.
func (d *Driver) Wait(ctx context.Context, id string) error {
	if p := d.proc(id); p != nil {
		select {
		case <-p.exited:
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
	return nil
}
