package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Check verifies that the binaries a machine needs are present (mc-agent,
// Xvnc, Chromium, and ip and iptables in netns mode) and, in netns mode,
// that the bridge is up. Its error is one line naming what is missing and the Debian package
// that provides it.
func (d *Driver) Check(ctx context.Context) error {
	var missing []string
	need := []struct{ path, what string }{
		{d.cfg.AgentPath, "mc-agent (build ./cmd/mc-agent)"},
		{d.cfg.XvncPath, "Xvnc (Debian package tigervnc-standalone-server)"},
		{d.cfg.ChromiumPath, "chromium (Debian package chromium)"},
	}
	if d.mode == ModeNetns {
		need = append(need, struct{ path, what string }{"ip", "ip (Debian package iproute2)"})
		if d.confined {
			need = append(need, struct{ path, what string }{"iptables", "iptables (Debian package iptables)"})
		}
	}
	for _, n := range need {
		if _, err := exec.LookPath(n.path); err != nil {
			missing = append(missing, n.what)
		}
	}
	if d.mode == ModeNetns {
		br := d.pool.Config().Bridge
		if _, err := os.Stat("/sys/class/net/" + br + "/bridge"); err != nil {
			missing = append(missing, "bridge "+br+" (kernel bridge support, module bridge)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("local driver (%s): missing %s", d.mode, strings.Join(missing, ", "))
	}
	return nil
}
