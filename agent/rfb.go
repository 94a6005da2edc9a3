package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// probeRFB dials addr and reads the RFB version banner ("RFB 003.00x\n").
func probeRFB(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial vnc %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(2 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	banner := make([]byte, 12)
	if _, err := io.ReadFull(conn, banner); err != nil {
		return fmt.Errorf("read rfb banner from %s: %w", addr, err)
	}
	if !strings.HasPrefix(string(banner), "RFB 003.") || banner[11] != '\n' {
		return fmt.Errorf("read rfb banner from %s: got %q", addr, banner)
	}
	return nil
}
