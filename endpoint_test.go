package mc_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	mc "github.com/master-controller/mc"
)

func TestEndpoint(t *testing.T) {
	m := mc.Machine{SocketDir: "/run/s/0a1b2c3d"}
	if got := m.VNCEndpoint(); got != (mc.Endpoint{Network: "unix", Address: "/run/s/0a1b2c3d/vnc"}) {
		t.Errorf("VNCEndpoint = %v", got)
	}
	if got := mc.ParseEndpoint(m.AgentEndpoint().String()); got != m.AgentEndpoint() {
		t.Errorf("ParseEndpoint(%s) = %v, want %v", m.AgentEndpoint(), got, m.AgentEndpoint())
	}
	if got := mc.ParseEndpoint("10.0.0.2:5900"); got != (mc.Endpoint{Network: "tcp", Address: "10.0.0.2:5900"}) {
		t.Errorf("ParseEndpoint(tcp) = %v", got)
	}
}

// TestEndpointDialRefusesLinks: a machine can write in its socket
// directory; a symbolic link there to another socket is not dialled.
func TestEndpointDialRefusesLinks(t *testing.T) {
	dir, err := os.MkdirTemp("", "ep")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	other := filepath.Join(dir, "other")
	ln, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if c, err := (mc.Endpoint{Network: "unix", Address: other}).Dial(t.Context(), 0); err != nil {
		t.Fatalf("dial the socket itself: %v", err)
	} else {
		c.Close()
	}
	link := filepath.Join(dir, "vnc")
	if err := os.Symlink(other, link); err != nil {
		t.Fatal(err)
	}
	if c, err := (mc.Endpoint{Network: "unix", Address: link}).Dial(t.Context(), 0); !errors.Is(err, mc.ErrNotSocket) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial a link to a socket: %v, want ErrNotSocket", err)
	}
}
