package netpool

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// setupEgress turns on IP forwarding and adds a MASQUERADE rule for the
// machine network (once). It needs iptables.
func (p *Pool) setupEgress(ctx context.Context) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return fmt.Errorf("egress for %s needs iptables (Debian package iptables): %w", p.cfg.Network, err)
	}
	rule := p.masqueradeRule()
	check := append([]string{"-w", "-t", "nat", "-C"}, rule...)
	if exec.CommandContext(ctx, ipt, check...).Run() != nil {
		add := append([]string{"-w", "-t", "nat", "-A"}, rule...)
		if out, err := exec.CommandContext(ctx, ipt, add...).CombinedOutput(); err != nil {
			return fmt.Errorf("add masquerade rule for %s: %w: %s", p.cfg.Network, err, out)
		}
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

// teardownEgress removes the MASQUERADE rule; IP forwarding stays as it is,
// since something else may rely on it.
func (p *Pool) teardownEgress(ctx context.Context) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return
	}
	del := append([]string{"-w", "-t", "nat", "-D"}, p.masqueradeRule()...)
	_ = exec.CommandContext(ctx, ipt, del...).Run()
}

func (p *Pool) masqueradeRule() []string {
	return []string{"POSTROUTING", "-s", p.cfg.Network.String(), "!", "-o", p.cfg.Bridge, "-j", "MASQUERADE"}
}
