package storetest

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

// TinyDisk mounts a tmpfs of the given size ("4m", as mount's size=) for
// the test, owned by uid:gid, in a directory that any user can traverse (a
// database server running as another user keeps files there), and returns
// its path; it is unmounted in tb.Cleanup, so call it before starting what
// must stop first. It needs root: without root the test skips, or fails
// under CI=true.
func TinyDisk(tb testing.TB, size string, uid, gid int) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(tb, "a full-disk test needs root (to mount a tmpfs)")
	}
	parent, err := os.MkdirTemp("", "mc-tinydisk-")
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(parent, "disk")
	if err := errors.Join(os.Chmod(parent, 0o755), os.Mkdir(dir, 0o700)); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		tb.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
		os.RemoveAll(parent)
	})
	if err := os.Chown(dir, uid, gid); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Fill writes the file at path until its disk is full.
func Fill(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// WantFull fails the test unless err is EUNAVAILABLE with reason
// store_full and a RetryAfter: what a store answers while its disk is full.
func WantFull(tb testing.TB, what string, err error) {
	tb.Helper()
	var e *mc.Error
	if !errors.As(err, &e) || e.Code != mc.EUNAVAILABLE || e.Reason != "store_full" || e.RetryAfter <= 0 {
		tb.Fatalf("%s on a full disk: got %v, want unavailable (store_full) with RetryAfter", what, err)
	}
}

// CreateUntilFull creates sessions until one fails (a database may hold a
// few more writes in space it already has) and returns that error.
func CreateUntilFull(tb testing.TB, s mc.Store) error {
	tb.Helper()
	for range 100000 {
		if err := s.CreateSession(tb.Context(), NewSession(mc.NewID(), "demo", time.Time{}), "r1", mc.Capacity{}); err != nil {
			return err
		}
	}
	tb.Fatal("100000 sessions created on a full disk")
	return nil
}

// DiskFull is the full-disk test of a store s whose data is on disk (a
// TinyDisk): once the disk is full, creating fails with EUNAVAILABLE
// store_full and Ping fails the same way (so /readyz fails while writes
// fail), reads still answer, whileFull (if not nil) checks more of the
// store's own, and once the space returns Ping and creating work again.
func DiskFull(t *testing.T, s mc.Store, disk string, whileFull func(live *mc.Session)) {
	live := NewSession("before", "demo", time.Time{})
	if err := s.CreateSession(t.Context(), live, "r1", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	Fill(t, filler)
	// The database may hold a few more writes in space it already has; the
	// first write that needs more must fail as store_full.
	WantFull(t, "create", CreateUntilFull(t, s))
	WantFull(t, "ping", s.Ping(t.Context()))
	if _, err := s.Session(t.Context(), live.ID); err != nil {
		t.Errorf("read while full: %v", err)
	}
	if whileFull != nil {
		whileFull(live)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("ping after space returned: %v", err)
	}
	if err := s.CreateSession(t.Context(), NewSession("after", "demo", time.Time{}), "r1", mc.Capacity{}); err != nil {
		t.Fatalf("create after space returned: %v", err)
	}
	if _, err := s.Transition(t.Context(), mc.Transition{ID: live.ID, From: mc.StatePending, Version: 1,
		To: mc.StateCancelled, Reason: mc.ReasonCancelledByAPI, Replica: "r1"}); err != nil {
		t.Fatalf("cancel after space returned: %v", err)
	}
}
