package rfb

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/master-controller/mc"
)

// Probe dials ep (mc.Endpoint.Dial) and reads the server's RFB version banner: the one check
// that a VNC server answers, for the agent's health and the controller's
// readiness alike. It waits at most 2 s for the banner (less when ctx ends
// sooner).
func Probe(ctx context.Context, ep mc.Endpoint) error {
	addr := ep.String()
	conn, err := ep.Dial(ctx, 0)
	if err != nil {
		return fmt.Errorf("dial vnc %s: %w", addr, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	var b [12]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fmt.Errorf("read rfb banner from %s: %w", addr, err)
	}
	if _, ok := ParseBanner(b[:]); !ok {
		return fmt.Errorf("read rfb banner from %s: %w", addr, ErrNotRFB)
	}
	return nil
}
