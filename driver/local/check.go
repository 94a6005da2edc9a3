package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// DefaultCLIDir is where scripts/deps.sh installs the pinned provider CLIs.
const DefaultCLIDir = "/opt/master-controller/clis/current/node_modules/.bin"

// CheckCLI says, in one line, whether the provider CLI name can run in a
// machine: nil when CLIDir (or PATH) holds it, else what is missing and how
// to install it.
func (d *Driver) CheckCLI(name string) error {
	if name == "" {
		return nil
	}
	if isExecutable(filepath.Join(d.cfg.CLIDir, name)) {
		return nil
	}
	if _, err := exec.LookPath(name); err == nil {
		return nil
	}
	return fmt.Errorf("local driver: provider CLI %s is missing from %s: run scripts/deps.sh (npm ci of clis/package-lock.json)", name, d.cfg.CLIDir)
}
