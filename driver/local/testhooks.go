package local

import (
	"path/filepath"
	"strings"
)

// MachineTestHooks is configuration for tests only: what lets a test stand in for
// a provider on the network (the e2e tests of real CLI logins). It is nil in
// every real deployment; nothing here weakens a machine unless a test sets
// it.
type MachineTestHooks struct {
	// Hosts, when set, is a confined machine's /etc/hosts (instead of
	// Config.Hosts): the provider's real host names mapped to the machine's
	// own loopback, where the test's stand-in listens.
	Hosts string
	// Binds are further host paths that confined machines see read-only (the
	// test CA that the CLIs are told to trust).
	Binds []string
	// TrustSPKI is the base64 SHA-256 of a test certificate's public key
	// that the machine's Chromium accepts without a trusted CA
	// (--ignore-certificate-errors-spki-list).
	TrustSPKI string
}

// testAgentArgs are the agent's flags that MachineTestHooks asks for.
func (d *Driver) testAgentArgs() []string {
	if d.cfg.Test == nil || d.cfg.Test.TrustSPKI == "" {
		return nil
	}
	return []string{"--test-trust-spki", d.cfg.Test.TrustSPKI}
}

// machineHosts is a confined machine's /etc/hosts.
func (d *Driver) machineHosts() string {
	if d.cfg.Test != nil && d.cfg.Test.Hosts != "" {
		return d.cfg.Test.Hosts
	}
	return d.cfg.Hosts
}

// machineBinds are the host paths a confined machine sees read-only besides
// /usr, its curated /etc and the agent: Config.ReadOnlyBinds, the provider
// CLIs' install tree, and the tests' binds.
func (d *Driver) machineBinds() []string {
	binds := append([]string(nil), d.cfg.ReadOnlyBinds...)
	if root := cliRoot(d.cfg.CLIDir); root != "" {
		binds = append(binds, root)
	}
	if d.cfg.Test != nil {
		binds = append(binds, d.cfg.Test.Binds...)
	}
	return binds
}

// cliDir is the CLI directory as a machine sees it: CLIDir with its symlinks
// resolved (the "current" link of scripts/deps.sh is not in the machine).
func cliDir(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return dir
}

// cliRoot is the tree to bind for the CLIs of dir: for an npm prefix's
// node_modules/.bin (whose entries are relative links into node_modules),
// the prefix; otherwise dir itself; "" when dir does not exist.
func cliRoot(dir string) string {
	r, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return ""
	}
	if strings.HasSuffix(r, "/node_modules/.bin") {
		return strings.TrimSuffix(r, "/node_modules/.bin")
	}
	return r
}
