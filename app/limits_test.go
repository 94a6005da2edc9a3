package app_test

import (
	"testing"

	"github.com/master-controller/mc/app"
)

func TestConnectionLimits(t *testing.T) {
	for _, nofile := range []uint64{64, 1024, 4096, 20000, 1 << 20, 1 << 40} {
		conns, viewers := app.ConnectionLimits(nofile)
		if conns < 1 || viewers < 1 {
			t.Errorf("nofile %d: got %d connections, %d viewers; want at least 1 each", nofile, conns, viewers)
		}
		// Each viewer holds two descriptors; 1024 (a quarter of a small
		// limit) stay for the rest.
		if used := uint64(conns + 2*viewers); nofile >= 8 && used > nofile-min(1024, nofile/4) {
			t.Errorf("nofile %d: %d connections and %d viewers leave too few descriptors", nofile, conns, viewers)
		}
	}
	if conns, viewers := app.ConnectionLimits(20000); conns != 9488 || viewers != 4744 {
		t.Errorf("nofile 20000: got %d, %d; want 9488, 4744", conns, viewers)
	}
}
