package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/storetest"
)

// TestDiskFull: on a full disk, writes (a create, a cancel) fail with
// EUNAVAILABLE reason store_full, not an internal error, Ping fails with
// them, and both recover with the space (issue 11, item 3).
func TestDiskFull(t *testing.T) {
	disk := storetest.TinyDisk(t, "4m", 0, 0) // unmounted after the store closes
	s := open(t, filepath.Join(disk, "mc.db"), sqlite.Options{})
	storetest.DiskFull(t, s, disk, func(live *mc.Session) {
		_, err := s.Transition(t.Context(), mc.Transition{ID: live.ID, From: mc.StatePending, Version: 1,
			To: mc.StateCancelled, Reason: mc.ReasonCancelledByAPI, Replica: "r1"})
		storetest.WantFull(t, "cancel", err)
	})
}
