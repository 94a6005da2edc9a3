// Package netpool is the host network of local machines when the controller
// runs as root: one Linux bridge with the host at the network's first address,
// and per machine a network namespace joined to the bridge by a veth pair.
// Bridge port isolation keeps machines from reaching each other while the host
// reaches all of them. Addresses are leased through an mc.LeaseStore, so two
// replicas (or a restarted controller) never hand out one twice.
//
// It drives iproute2 (`ip`, `bridge`), and iptables for the firewall that
// keeps machines off the host and each other; every removal is idempotent.
package netpool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	mc "github.com/master-controller/mc"
)

// Defaults of Config.
const (
	DefaultBridge = "mcbr0"
)

// DefaultNetwork is the machine network when Config.Network is unset.
var DefaultNetwork = netip.MustParsePrefix("10.200.0.0/24")

// Name prefixes of the host resources this package creates. Reconcile finds
// leftovers by them.
const (
	NamespacePrefix = "mc-"
	VethPrefix      = "mcv"
	// PeerName is the machine side of the veth pair, inside the namespace.
	PeerName = "eth0"
)

// Config is the host network of the machines.
type Config struct {
	// Bridge is the Linux bridge the machines join (default "mcbr0"). It is
	// created when missing, with the host at the network's first address.
	Bridge string
	// Network is the machine network, an IPv4 prefix of /8 to /29 (default
	// 10.200.0.0/24). The bridge holds base+1, slot s gets base+2+s.
	Network netip.Prefix
	// Egress lets machines reach beyond the host: IP forwarding and a
	// MASQUERADE rule for Network (iptables). Off by default: then a machine
	// reaches only the host's bridge address.
	Egress bool
}

// Pool hands out machine addresses on one bridge and wires namespaces to it.
type Pool struct {
	cfg   Config
	store mc.LeaseStore
	log   *slog.Logger
	ip    string // path of the ip binary
}

// Attachment is one machine's place on the bridge.
type Attachment struct {
	// Namespace is the network namespace's name (as in `ip netns`).
	Namespace string
	// Veth is the host side of the veth pair (a bridge port).
	Veth string
	// IP is the machine's address inside its namespace.
	IP netip.Addr
}

// New returns a pool for cfg. It touches nothing on the host; Setup does.
// Errors: EINVALID for a bad network or bridge name.
func New(cfg Config, store mc.LeaseStore, log *slog.Logger) (*Pool, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if !cfg.Network.IsValid() {
		cfg.Network = DefaultNetwork
	}
	cfg.Network = cfg.Network.Masked()
	if !cfg.Network.Addr().Is4() || cfg.Network.Bits() < 8 || cfg.Network.Bits() > 29 {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadNetwork, "machine network %s must be IPv4, /8 to /29", cfg.Network)
	}
	if len(cfg.Bridge) > 15 || strings.ContainsAny(cfg.Bridge, " /\t\n") {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadBridge, "bridge name %q is not a valid interface name", cfg.Bridge)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		ip = "ip"
	}
	return &Pool{cfg: cfg, store: store, log: log, ip: ip}, nil
}

// Config returns the pool's configuration with defaults filled in.
func (p *Pool) Config() Config { return p.cfg }

// Name is the pool's name in the lease store: "local/<bridge>".
func (p *Pool) Name() string { return "local/" + p.cfg.Bridge }

// Size is the number of machine addresses in the network (all but the
// network address, the bridge's and the broadcast address).
func (p *Pool) Size() int { return 1<<(32-p.cfg.Network.Bits()) - 3 }

// Gateway is the host's address on the bridge.
func (p *Pool) Gateway() netip.Addr { return p.cfg.Network.Addr().Next() }

// Addr is the address of slot s: network base + 2 + s.
func (p *Pool) Addr(slot int) netip.Addr {
	b := p.cfg.Network.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += 2 + uint32(slot)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Lease takes the lowest free slot in [0, n) for owner (a machine id); leasing
// again for the same owner returns the slot it holds. n is capped at Size.
// Errors: EUNAVAILABLE (reason "pool_exhausted") from the store.
func (p *Pool) Lease(ctx context.Context, owner string, n int) (int, error) {
	if n <= 0 || n > p.Size() {
		n = p.Size()
	}
	s, err := p.store.Lease(ctx, p.Name(), owner, 0, n-1)
	if err != nil {
		return 0, fmt.Errorf("lease slot for %s: %w", owner, err)
	}
	return s, nil
}

// Release frees owner's slot; releasing nothing is fine.
func (p *Pool) Release(ctx context.Context, owner string) error {
	if err := p.store.Release(ctx, p.Name(), owner); err != nil {
		return fmt.Errorf("release slot of %s: %w", owner, err)
	}
	return nil
}

// Names returns the namespace and host-side veth names of machine id:
// "mc-" and "mcv" followed by the first 8 hex digits of sha256(id).
func Names(id string) (namespace, veth string) {
	h := Hash(id)
	return NamespacePrefix + h, VethPrefix + h
}

// Hash is the short name of machine id on the host: the first 8 hex digits
// of sha256(id).
func Hash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}

// Setup makes sure the bridge exists and is up with the host at the network's
// first address and a hardware address of its own (BridgeMAC), and sets up
// egress when configured. It is idempotent.
func (p *Pool) Setup(ctx context.Context) error {
	br := p.cfg.Bridge
	if _, err := os.Stat("/sys/class/net/" + br); err != nil {
		if _, err := p.run(ctx, "link", "add", br, "type", "bridge"); err != nil && !isExists(err) {
			return fmt.Errorf("create bridge %s: %w", br, err)
		}
	} else if _, err := os.Stat("/sys/class/net/" + br + "/bridge"); err != nil {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadBridge, "interface %s exists and is not a bridge", br)
	}
	if _, err := p.run(ctx, "link", "set", br, "address", BridgeMAC(br).String()); err != nil {
		return fmt.Errorf("set hardware address of bridge %s: %w", br, err)
	}
	gw := netip.PrefixFrom(p.Gateway(), p.cfg.Network.Bits()).String()
	if _, err := p.run(ctx, "addr", "replace", gw, "dev", br); err != nil {
		return fmt.Errorf("address bridge %s: %w", br, err)
	}
	if _, err := p.run(ctx, "link", "set", br, "up"); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", br, err)
	}
	if p.cfg.Egress {
		if err := p.setupEgress(ctx); err != nil {
			return err
		}
	}
	return nil
}

// BridgeMAC is the hardware address the bridge named br is given: locally
// administered, from a hash of its name. A bridge left to itself takes the
// lowest address of its ports, so it changed whenever a machine's veth
// joined or left, while every other machine still sent to the address it
// had learnt: their replies went nowhere until their neighbour entry was
// checked again, 10 to 15 s later (measured on readiness long polls that
// stalled that long whenever another machine started or ended; any other
// connection to a machine, a viewer's VNC stream or a login poll, is open to
// the same stall).
func BridgeMAC(br string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("master-controller bridge " + br))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	return mac
}

// Teardown removes the bridge and its rules: egress (whether or not this
// configuration enables it: an earlier run may have) and firewall. Machines
// attached to it lose their network; it is for tests, and for Down.
// Removing nothing is fine.
//
// The bridge goes first: a bridge whose removal failed keeps its rules.
func (p *Pool) Teardown(ctx context.Context) error {
	if err := RemoveLink(ctx, p.cfg.Bridge); err != nil {
		return fmt.Errorf("remove bridge %s: %w", p.cfg.Bridge, err)
	}
	p.teardownEgress(ctx)
	p.RemoveFirewall(ctx)
	return nil
}

// Ports returns the names of the bridge's ports, the host sides of the
// machines attached to it (none when there is no bridge).
func (p *Pool) Ports() []string {
	ents, _ := os.ReadDir("/sys/class/net/" + p.cfg.Bridge + "/brif")
	var ports []string
	for _, e := range ents {
		ports = append(ports, e.Name())
	}
	return ports
}

// Down removes what Setup and Firewall made on the host (the bridge, its
// address, its egress and firewall rules), for uninstall: the controller
// leaves them when it stops, for the next start and for machines that
// outlive it. It needs root (EINVALID, netns_needs_root) and refuses
// (ECONFLICT, bridge_in_use) while a controller uses the bridge (Use) or a
// machine is attached to it. It reports whether there was a bridge.
func (p *Pool) Down(ctx context.Context) (bool, error) {
	if os.Geteuid() != 0 {
		return false, mc.Errorf(mc.EINVALID, mc.ReasonNetnsNeedsRoot, "removing the machine network needs root")
	}
	release, err := p.exclusive()
	if err != nil {
		return false, err
	}
	defer release()
	if ports := p.Ports(); len(ports) > 0 {
		return true, mc.Errorf(mc.ECONFLICT, mc.ReasonBridgeInUse,
			"machines are still attached to bridge %s (ports %s): stop the controller, which destroys its machines (or start it once and stop it, to have leftovers destroyed)",
			p.cfg.Bridge, strings.Join(ports, ", "))
	}
	_, err = os.Stat("/sys/class/net/" + p.cfg.Bridge)
	return err == nil, p.Teardown(ctx)
}

// Attach creates machine id's namespace and veth pair for the given slot:
// the host side joins the bridge as an isolated port, the machine side is
// eth0 with the slot's address, loopback is up, and the default route points
// at the host. Neither side gets an IPv6 link-local address. Anything left
// from an earlier attempt is removed first, and so is the host's neighbour
// entry for the address: it names the hardware address of the machine that
// had the address before, so the host's first packet to the new machine (the
// readiness probe's SYN) went to that one, nowhere, and TCP sent it again a
// second later. That second was half of every cold start (bench/pool.sh,
// one start every 2 s: p50 1066 ms without the flush, 521 ms with it).
func (p *Pool) Attach(ctx context.Context, id string, slot int) (Attachment, error) {
	ns, veth := Names(id)
	a := Attachment{Namespace: ns, Veth: veth, IP: p.Addr(slot)}
	if slot < 0 || slot >= p.Size() {
		return a, mc.Errorf(mc.EINVALID, mc.ReasonBadSlot, "slot %d is outside the machine network", slot)
	}
	if err := Detach(ctx, id); err != nil {
		return a, err
	}
	cidr := netip.PrefixFrom(a.IP, p.cfg.Network.Bits()).String()
	host := [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", PeerName, "netns", ns},
		// No IPv6 link-local addresses: the machine network is IPv4 only.
		{"link", "set", veth, "addrgenmode", "none"},
		{"link", "set", veth, "master", p.cfg.Bridge},
		{"link", "set", veth, "type", "bridge_slave", "isolated", "on"},
		{"link", "set", veth, "up"},
		{"neigh", "flush", "to", a.IP.String(), "dev", p.cfg.Bridge},
	}
	inner := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", PeerName, "addrgenmode", "none"},
		{"addr", "add", cidr, "dev", PeerName},
		{"link", "set", PeerName, "up"},
		{"route", "add", "default", "via", p.Gateway().String()},
	}
	if err := p.batch(ctx, "", host); err != nil {
		return a, fmt.Errorf("attach machine %s: %w", id, err)
	}
	if err := p.batch(ctx, ns, inner); err != nil {
		return a, fmt.Errorf("configure namespace of machine %s: %w", id, err)
	}
	return a, nil
}

// Detach removes machine id's veth pair and namespace. Removing what is not
// there is fine. Processes still inside the namespace keep it alive in the
// kernel (without its name); kill them first.
func Detach(ctx context.Context, id string) error {
	ns, veth := Names(id)
	if err := RemoveLink(ctx, veth); err != nil {
		return fmt.Errorf("detach machine %s: %w", id, err)
	}
	if err := RemoveNamespace(ctx, ns); err != nil {
		return fmt.Errorf("detach machine %s: %w", id, err)
	}
	return nil
}

// Exists reports what is left of machine id on the host: its namespace and
// its veth.
func Exists(id string) (namespace, veth bool) {
	ns, v := Names(id)
	_, err := os.Stat(NamespaceDir + "/" + ns)
	namespace = err == nil
	_, err = os.Stat("/sys/class/net/" + v)
	veth = err == nil
	return namespace, veth
}

// run runs one ip command and returns its output.
func (p *Pool) run(ctx context.Context, args ...string) ([]byte, error) {
	return runIP(ctx, p.ip, args...)
}

// batch runs several ip commands in one process (`ip -batch -`), inside
// namespace ns when it is not "".
func (p *Pool) batch(ctx context.Context, ns string, cmds [][]string) error {
	var in bytes.Buffer
	for _, c := range cmds {
		in.WriteString(strings.Join(c, " "))
		in.WriteByte('\n')
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, p.ip, args...)
	cmd.Stdin = &in
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runIP(ctx context.Context, ip string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, ip, args...).CombinedOutput()
	if err != nil {
		return out, &cmdError{args: args, err: err, out: strings.TrimSpace(string(out))}
	}
	return out, nil
}

type cmdError struct {
	args []string
	err  error
	out  string
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("ip %s: %v: %s", strings.Join(e.args, " "), e.err, e.out)
}

func (e *cmdError) Unwrap() error { return e.err }

func isExists(err error) bool {
	var ce *cmdError
	return errors.As(err, &ce) && strings.Contains(ce.out, "File exists")
}

func isMissing(err error) bool {
	var ce *cmdError
	if !errors.As(err, &ce) {
		return false
	}
	for _, s := range []string{"Cannot find device", "No such file", "does not exist", "not found"} {
		if strings.Contains(ce.out, s) {
			return true
		}
	}
	return false
}
