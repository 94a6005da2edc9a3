package netpool_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool"
	"github.com/master-controller/mc/netpool/netpooltest"
)

func TestNames(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := mc.NewID()
		ns, veth := netpool.Names(id)
		if len(ns) != 11 || ns[:3] != "mc-" {
			t.Errorf("namespace of %s = %q, want mc-<8 hex>", id, ns)
		}
		if len(veth) > 15 || veth[:3] != "mcv" || veth[3:] != ns[3:] {
			t.Errorf("veth of %s = %q, want mcv<8 hex> matching %q", id, veth, ns)
		}
		if ns2, _ := netpool.Names(id); ns2 != ns {
			t.Errorf("Names(%s) not stable: %q then %q", id, ns, ns2)
		}
		seen[ns] = true
	}
	if len(seen) != 100 {
		t.Errorf("got %d distinct names for 100 ids, want 100", len(seen))
	}
}

func TestAddr(t *testing.T) {
	tests := []struct {
		network string
		slot    int
		want    string
		size    int
	}{
		{"10.200.0.0/24", 0, "10.200.0.2", 253},
		{"10.200.0.0/24", 252, "10.200.0.254", 253},
		{"10.200.0.0/16", 300, "10.200.1.46", 65533},
		{"192.168.5.7/29", 1, "192.168.5.3", 5},
	}
	for _, tt := range tests {
		p, err := netpool.New(netpool.Config{Network: netip.MustParsePrefix(tt.network)}, &netpooltest.Leases{}, nil)
		if err != nil {
			t.Fatalf("New(%s): %v", tt.network, err)
		}
		if got := p.Addr(tt.slot).String(); got != tt.want {
			t.Errorf("Addr(%d) in %s = %s, want %s", tt.slot, tt.network, got, tt.want)
		}
		if got := p.Size(); got != tt.size {
			t.Errorf("Size of %s = %d, want %d", tt.network, got, tt.size)
		}
	}
	for _, bad := range []string{"10.0.0.0/30", "fd00::/64", "10.0.0.0/4"} {
		_, err := netpool.New(netpool.Config{Network: netip.MustParsePrefix(bad)}, &netpooltest.Leases{}, nil)
		if got := mc.ErrorCode(err); got != mc.EINVALID {
			t.Errorf("New(%s): got code %q, want %q", bad, got, mc.EINVALID)
		}
	}
}

func TestLease(t *testing.T) {
	store := &netpooltest.Leases{}
	p, err := netpool.New(netpool.Config{Bridge: "mcbrx", Network: netip.MustParsePrefix("10.1.0.0/29")}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Name(), "local/mcbrx"; got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
	ctx := t.Context()
	a, _ := p.Lease(ctx, "a", 2)
	b, _ := p.Lease(ctx, "b", 2)
	a2, _ := p.Lease(ctx, "a", 2)
	if a != 0 || b != 1 || a2 != 0 {
		t.Errorf("slots a, b, a again = %d, %d, %d; want 0, 1, 0", a, b, a2)
	}
	if _, err := p.Lease(ctx, "c", 2); mc.ErrorCode(err) != mc.EUNAVAILABLE {
		t.Errorf("third lease of 2: got %v, want EUNAVAILABLE", err)
	}
	if err := p.Release(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if c, err := p.Lease(ctx, "c", 2); err != nil || c != 0 {
		t.Errorf("lease after release = %d, %v; want 0, nil", c, err)
	}
}

// TestAttach creates two machines' namespaces on a fresh bridge and checks
// wiring, isolation, listing and idempotent removal.
func TestAttach(t *testing.T) {
	netpooltest.Root(t)
	ctx := t.Context()
	cfg := netpooltest.Config(t)
	p, err := netpool.New(cfg, &netpooltest.Leases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Setup(ctx); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if err := p.Setup(ctx); err != nil {
		t.Fatalf("Setup again: %v", err)
	}
	ids := []string{mc.NewID(), mc.NewID()}
	var atts []netpool.Attachment
	for i, id := range ids {
		t.Cleanup(func() { _ = netpool.Detach(context.Background(), id) })
		start := time.Now()
		a, err := p.Attach(ctx, id, i)
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		t.Logf("namespace and veth setup: %v", time.Since(start))
		if a.IP != p.Addr(i) {
			t.Errorf("IP = %s, want %s", a.IP, p.Addr(i))
		}
		atts = append(atts, a)
	}

	// The bridge keeps its own hardware address whatever veths join or
	// leave it: machines learn it once.
	bridgeMAC := func() string {
		b, _ := os.ReadFile("/sys/class/net/" + cfg.Bridge + "/address")
		return strings.TrimSpace(string(b))
	}
	if got, want := bridgeMAC(), netpool.BridgeMAC(cfg.Bridge).String(); got != want {
		t.Errorf("bridge address %s with two machines, want %s", got, want)
	}
	_, veth := netpool.Names(ids[0])
	if err := exec.Command("ip", "link", "set", veth, "address", "02:00:00:00:00:01").Run(); err != nil {
		t.Fatal(err)
	}
	if got, want := bridgeMAC(), netpool.BridgeMAC(cfg.Bridge).String(); got != want {
		t.Errorf("bridge address %s after a port took a lower address, want %s", got, want)
	}

	// IPv4 only: no IPv6 address on either side.
	for _, a := range atts {
		out, err := exec.Command("ip", "-n", a.Namespace, "-6", "addr", "show", "dev", netpool.PeerName).CombinedOutput()
		if err != nil || strings.Contains(string(out), "inet6") {
			t.Errorf("IPv6 in %s: %s %v, want none", a.Namespace, out, err)
		}
		out, err = exec.Command("ip", "-6", "addr", "show", "dev", a.Veth).CombinedOutput()
		if err != nil || strings.Contains(string(out), "inet6") {
			t.Errorf("IPv6 on %s: %s %v, want none", a.Veth, out, err)
		}
	}

	// Port isolation is on for both host sides.
	for _, a := range atts {
		b, err := os.ReadFile("/sys/class/net/" + a.Veth + "/brport/isolated")
		if err != nil || string(b) != "1\n" {
			t.Errorf("%s brport/isolated = %q, %v; want 1", a.Veth, b, err)
		}
	}

	// A listener in each namespace; the host reaches both, A does not reach B.
	for _, a := range atts {
		err := netpool.Do(a.Namespace, func() error {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a.IP, 5900).String())
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			return nil
		})
		if err != nil {
			t.Fatalf("listen in %s: %v", a.Namespace, err)
		}
	}
	for _, a := range atts {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a.IP, 5900).String(), 2*time.Second)
		if err != nil {
			t.Errorf("host dial %s: %v, want success", a.IP, err)
		} else {
			c.Close()
		}
	}
	err = netpool.Do(atts[0].Namespace, func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(atts[1].IP, 5900).String(), 500*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("connected")
		}
		// The host's bridge address is reachable from the namespace.
		if _, err := net.DialTimeout("tcp", netip.AddrPortFrom(p.Gateway(), 1).String(), 500*time.Millisecond); err == nil {
			return nil
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return errors.New("host bridge address unreachable (timeout)")
		}
		return nil
	})
	if err != nil {
		t.Errorf("from %s to %s: %v, want no connection to the other machine and a refused (not timed-out) dial to the host", atts[0].Namespace, atts[1].IP, err)
	}

	// Listing.
	nss, err := netpool.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	veths, err := netpool.Veths()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range atts {
		if !slices.Contains(nss, a.Namespace) {
			t.Errorf("Namespaces() = %v, missing %s", nss, a.Namespace)
		}
		if !slices.Contains(veths, netpool.Veth{Name: a.Veth, Master: p.Config().Bridge}) {
			t.Errorf("Veths() = %v, missing %s on %s", veths, a.Veth, p.Config().Bridge)
		}
	}

	// Removal, twice.
	for _, id := range ids {
		for range 2 {
			if err := netpool.Detach(ctx, id); err != nil {
				t.Errorf("Detach(%s): %v", id, err)
			}
		}
		if ns, veth := netpool.Exists(id); ns || veth {
			t.Errorf("after Detach(%s): namespace %v, veth %v; want neither", id, ns, veth)
		}
	}
}

// TestPids finds a process that sits in a namespace.
func TestPids(t *testing.T) {
	netpooltest.Root(t)
	ctx := t.Context()
	p, err := netpool.New(netpooltest.Config(t), &netpooltest.Leases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	id := mc.NewID()
	t.Cleanup(func() { _ = netpool.Detach(context.Background(), id) })
	a, err := p.Attach(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := netpool.Pids(a.Namespace)
	if err != nil || len(pids) != 0 {
		t.Errorf("Pids of a fresh namespace = %v, %v; want none", pids, err)
	}
	if pids, err := netpool.Pids("mc-nonexist"); err != nil || len(pids) != 0 {
		t.Errorf("Pids of a missing namespace = %v, %v; want none, nil", pids, err)
	}
	cmd := exec.Command("ip", "netns", "exec", a.Namespace, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// ip execs sleep after entering the namespace; wait for that.
	_ = testutil.Poll(t.Context(), 5*time.Second, func() error {
		if pids, err = netpool.Pids(a.Namespace); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pids, cmd.Process.Pid) {
			return errors.New("sleep not in the namespace yet")
		}
		return nil
	})
	if !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("Pids = %v, want [%d]", pids, cmd.Process.Pid)
	}
}

// BenchmarkAttach measures namespace + veth setup and removal.
func BenchmarkAttach(b *testing.B) {
	netpooltest.Root(b)
	ctx := b.Context()
	p, err := netpool.New(netpooltest.Config(b), &netpooltest.Leases{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		id := mc.NewID()
		if _, err := p.Attach(ctx, id, 0); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := netpool.Detach(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestFirewall: the bridge's rules go in once (a second Firewall adds
// nothing), name the bridge, and Teardown takes them all out.
func TestFirewall(t *testing.T) {
	netpooltest.Root(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("iptables not installed (CI=true: not skipping)")
		}
		t.Skip("iptables not installed")
	}
	for _, egress := range []bool{false, true} {
		cfg := netpooltest.Config(t)
		cfg.Egress = egress
		p, err := netpool.New(cfg, &netpooltest.Leases{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rules := func() []string {
			var out []string
			for _, chain := range []string{"INPUT", "FORWARD"} {
				b, err := exec.Command("iptables", "-w", "-S", chain).Output()
				if err != nil {
					t.Fatalf("iptables -S %s: %v", chain, err)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "master-controller "+cfg.Bridge) {
						out = append(out, l)
					}
				}
			}
			return out
		}
		for range 2 {
			if err := p.Firewall(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		got := rules()
		want := 3 // INPUT drop, machine to machine, no forward at all
		if egress {
			want = 2 + 9 // and one drop per private range
		}
		if len(got) != want {
			t.Errorf("egress %v: %d rules after two Firewall calls, want %d:\n%s", egress, len(got), want, strings.Join(got, "\n"))
		}
		if !slices.ContainsFunc(got, func(l string) bool {
			return strings.HasPrefix(l, "-A INPUT -i "+cfg.Bridge) && strings.Contains(l, "! --ctstate RELATED,ESTABLISHED") && strings.HasSuffix(l, "-j DROP")
		}) {
			t.Errorf("egress %v: no INPUT rule that drops new connections from %s:\n%s", egress, cfg.Bridge, strings.Join(got, "\n"))
		}
		if err := p.Teardown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if left := rules(); len(left) > 0 {
			t.Errorf("egress %v: rules left after Teardown:\n%s", egress, strings.Join(left, "\n"))
		}
	}
}

// TestDown: Down (master-controller network down) refuses while a
// controller uses the bridge or a machine is attached, then removes the bridge and every rule that Setup and
// Firewall made, egress included though its own configuration has none
// (the run that set them up had); a second Down finds nothing.
func TestDown(t *testing.T) {
	netpooltest.Root(t)
	ctx := t.Context()
	cfg := netpooltest.Config(t)
	cfg.Egress = true
	up, err := netpool.New(cfg, &netpooltest.Leases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := up.Firewall(ctx); err != nil {
		t.Fatal(err)
	}
	id := mc.NewID()
	t.Cleanup(func() { _ = netpool.Detach(context.Background(), id) })
	a, err := up.Attach(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := func() []string {
		var out []string
		for _, table := range []string{"filter", "nat"} {
			b, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
			if err != nil {
				t.Fatalf("iptables -t %s -S: %v", table, err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "master-controller "+cfg.Bridge) || strings.Contains(l, "-s "+cfg.Network.String()) {
					out = append(out, l)
				}
			}
		}
		return out
	}
	if n := len(ours()); n != 2+9+1 {
		t.Fatalf("%d rules after Setup and Firewall with egress, want 12:\n%s", n, strings.Join(ours(), "\n"))
	}
	down, err := netpool.New(netpool.Config{Bridge: cfg.Bridge, Network: cfg.Network}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A controller that uses the bridge (its lock held) keeps it.
	release, err := up.Use(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Down(ctx); mc.ErrorReason(err) != mc.ReasonBridgeInUse || !strings.Contains(fmt.Sprint(err), "running controller") {
		t.Errorf("Down while a controller uses the bridge: %v; want bridge_in_use", err)
	}
	release()
	had, err := down.Down(ctx)
	if mc.ErrorReason(err) != mc.ReasonBridgeInUse || !strings.Contains(fmt.Sprint(err), a.Veth) || !had {
		t.Fatalf("Down with a machine attached: %v, %v; want bridge_in_use naming %s", had, err, a.Veth)
	}
	if len(ours()) == 0 {
		t.Fatal("a refused Down removed the rules")
	}
	if err := netpool.Detach(ctx, id); err != nil {
		t.Fatal(err)
	}
	if had, err := down.Down(ctx); err != nil || !had {
		t.Fatalf("Down: %v, %v", had, err)
	}
	if _, err := os.Stat("/sys/class/net/" + cfg.Bridge); err == nil {
		t.Errorf("bridge %s left after Down", cfg.Bridge)
	}
	if left := ours(); len(left) > 0 {
		t.Errorf("rules left after Down:\n%s", strings.Join(left, "\n"))
	}
	if had, err := down.Down(ctx); err != nil || had {
		t.Errorf("second Down: %v, %v; want nothing found", had, err)
	}
}

// TestFreeNetwork: a /24 inside the space asked for that overlaps no address
// of the host (loopback's 127.0.0.0/8 is one: the space is all used).
func TestFreeNetwork(t *testing.T) {
	space := netip.MustParsePrefix("10.128.0.0/9")
	for range 20 {
		p, err := netpool.FreeNetwork(space)
		if err != nil || p.Bits() != 24 || !space.Contains(p.Addr()) || p != p.Masked() {
			t.Fatalf("FreeNetwork(%s) = %s, %v; want a /24 in it", space, p, err)
		}
	}
	if p, err := netpool.FreeNetwork(netip.MustParsePrefix("127.0.0.0/20")); mc.ErrorCode(err) != mc.EUNAVAILABLE {
		t.Errorf("FreeNetwork in loopback's range = %s, %v; want EUNAVAILABLE", p, err)
	}
	if _, err := netpool.FreeNetwork(netip.MustParsePrefix("10.1.2.0/25")); mc.ErrorCode(err) != mc.EINVALID {
		t.Errorf("FreeNetwork of a /25: %v, want EINVALID", err)
	}
}
