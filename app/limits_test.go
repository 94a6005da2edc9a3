package app_test

import (
	"testing"

	"github.com/master-controller/mc/app"
)

func TestConnectionLimits(t *testing.T) {
	for _, nofile := range []uint64{64, 1024, 4096, 20000, 1 << 20, 1 << 40} {
		conns, viewers := app.ConnectionLimits(nofile)
		if conns < 1 || viewers < 1 || viewers > conns {
			t.Errorf("nofile %d: got %d connections, %d viewers; want 1 ≤ viewers ≤ connections", nofile, conns, viewers)
		}
		// Each viewer holds its connection and one more descriptor; 1024
		// (a quarter of a small limit) stay for the rest.
		if used := uint64(conns + viewers); used > nofile-min(1024, nofile/4) {
			t.Errorf("nofile %d: %d connections and %d viewers leave too few descriptors", nofile, conns, viewers)
		}
	}
	if conns, viewers := app.ConnectionLimits(20000); conns != 12650 || viewers != 6325 {
		t.Errorf("nofile 20000: got %d, %d; want 12650, 6325", conns, viewers)
	}
}
