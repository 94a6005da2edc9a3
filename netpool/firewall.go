package netpool

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// privateRanges are the destinations a machine never reaches through the
// host, even with egress: the host's and other private networks.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
	"169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"}

// firewallRules are the iptables rules (table filter) that confine the
// bridge's machines: they open no connection to the host (any address of it,
// any port; the host's own connections to them and the replies are
// allowed), reach no other machine through the host, and leave the host
// only with egress, and then never to a private range.
func (p *Pool) firewallRules(egress bool) [][]string {
	br := p.cfg.Bridge
	tag := []string{"-m", "comment", "--comment", "master-controller " + br}
	rule := func(r ...string) []string { return append(r, tag...) }
	rules := [][]string{
		rule("INPUT", "-i", br, "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP"),
		rule("FORWARD", "-i", br, "-o", br, "-j", "DROP"),
	}
	if !egress {
		return append(rules, rule("FORWARD", "-i", br, "-j", "DROP"))
	}
	for _, r := range privateRanges {
		rules = append(rules, rule("FORWARD", "-i", br, "-d", r, "-j", "DROP"))
	}
	return rules
}

// Firewall installs the bridge's firewall rules (once: a rule that is there
// is not added again). It needs iptables (Debian package iptables).
func (p *Pool) Firewall(ctx context.Context) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return fmt.Errorf("machine firewall needs iptables (Debian package iptables): %w", err)
	}
	// Inserted at the top, in reverse, so they end up in order and before
	// any rule that accepts.
	rules := p.firewallRules(p.cfg.Egress)
	for i := len(rules) - 1; i >= 0; i-- {
		r := rules[i]
		if exec.CommandContext(ctx, ipt, append([]string{"-w", "-C"}, r...)...).Run() == nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, ipt, append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("add firewall rule %s: %w: %s", strings.Join(r, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// RemoveFirewall removes the bridge's firewall rules, with egress and
// without; missing ones are fine.
func (p *Pool) RemoveFirewall(ctx context.Context) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return
	}
	for _, r := range append(p.firewallRules(false), p.firewallRules(true)...) {
		for exec.CommandContext(ctx, ipt, append([]string{"-w", "-D"}, r...)...).Run() == nil {
		}
	}
}
