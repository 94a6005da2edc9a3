package local

import (
	"fmt"
	"os"
	"path/filepath"
)

// MachineTestHooks is configuration for tests only: what lets a test stand in for
// a provider on the network (the e2e tests of real CLI logins). It is nil in
// every real deployment; nothing here weakens a machine unless a test sets
// it.
type MachineTestHooks struct {
	// Hosts, when set, is the machine's /etc/hosts in netns mode (written
	// to /etc/netns/<namespace>/hosts, which `ip netns exec` binds over
	// /etc/hosts), with a resolv.conf of "nameserver 127.0.0.1" beside it so
	// that any other name fails at once instead of timing out.
	Hosts string
	// TrustSPKI is the base64 SHA-256 of a test certificate's public key
	// that the machine's Chromium accepts without a trusted CA
	// (--ignore-certificate-errors-spki-list).
	TrustSPKI string
}

// netnsEtc is where `ip netns exec` finds the files it binds over /etc.
const netnsEtc = "/etc/netns"

// writeTestEtc writes the test hosts file of namespace ns, if any.
func (d *Driver) writeTestEtc(ns string) error {
	if d.cfg.Test == nil || d.cfg.Test.Hosts == "" || ns == "" {
		return nil
	}
	dir := filepath.Join(netnsEtc, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write test hosts: %w", err)
	}
	for name, content := range map[string]string{"hosts": d.cfg.Test.Hosts, "resolv.conf": "nameserver 127.0.0.1\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write test %s: %w", name, err)
		}
	}
	return nil
}

// removeTestEtc removes what writeTestEtc wrote.
func (d *Driver) removeTestEtc(ns string) {
	if d.cfg.Test != nil && ns != "" {
		_ = os.RemoveAll(filepath.Join(netnsEtc, ns))
	}
}

// testAgentArgs are the agent's flags that MachineTestHooks asks for.
func (d *Driver) testAgentArgs() []string {
	if d.cfg.Test == nil || d.cfg.Test.TrustSPKI == "" {
		return nil
	}
	return []string{"--test-trust-spki", d.cfg.Test.TrustSPKI}
}
