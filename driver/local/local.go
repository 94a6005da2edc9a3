// Package local is the embedded runtime driver: each machine is a process
// group on this host (mc-agent, which starts Xvnc and Chromium), in a network
// namespace of its own on a bridge when the controller runs as root, else on
// loopback ports.
//
// As root every machine is confined (see research/isolation-here.md): its
// first process, "mc-agent init", starts in new mount, PID, IPC and UTS
// namespaces (and its network namespace in netns mode) inside a cgroup of
// its own (memory, pids, CPU), builds a tmpfs root with read-only binds of
// /usr and a curated /etc, and runs the agent, Xvnc and Chromium under a
// uid of the machine's own with no capability and no new privileges;
// Chromium keeps its sandbox on. Firewall rules keep netns machines off the
// host and each other. Destroy kills the PID namespace's first process, which
// ends the whole machine, and checks that its cgroup is empty.
//
// Without root (mode "userns", see userns.go) the same init runs in a user
// namespace of its own with a network namespace of its own, builds the same
// root, and the machine listens on Unix sockets only. A host that allows no
// unprivileged user namespaces is refused unless Config.InsecureSharedHost
// says that unconfined machines are acceptable (development only).
//
// Everything the driver knows about a machine is on the host: a directory
// <DataDir>/machines/<hash> with a machine.json state file and the private
// home, a private temporary directory <TmpDir>/mc-<hash> (Chromium's TMPDIR),
// and (in netns mode) the namespace and veth; <hash> is 8 hex digits of a hash
// of the id. A controller that restarts after SIGKILL finds its machines again
// with List and can Destroy them.
//
// DataDir may be as long as any directory path: no Unix socket lives below
// it. Chromium's singleton socket is below the machine's temporary
// directory, whose path is short by construction (see Config.TmpDir).
package local

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/netpool"
)

// Name is the driver's name in configuration and in Machine.Driver.
const Name = "local"

// Isolation modes.
const (
	ModeNetns    = "netns"
	ModeLoopback = "loopback"
	// ModeUserns (userns.go) is the mode of a controller that is not root.
)

// Ports and addresses of a machine, fixed inside a namespace.
const (
	nsVNCPort   = 5900
	nsAgentPort = 8080
)

// Config configures the local driver. The zero value works: every field has a
// default.
type Config struct {
	// DataDir holds one directory per machine (DataDir/machines/<id>) with
	// its state file, its private home and the agent's log. Default
	// /var/lib/master-controller/local as root, else
	// $XDG_STATE_HOME/master-controller/local.
	DataDir string
	// AgentPath is the mc-agent binary (default: "mc-agent" next to the
	// running executable, else on PATH).
	AgentPath string
	// XvncPath is TigerVNC's Xvnc, handed to the agent (default: "Xvnc" on
	// PATH).
	XvncPath string
	// ChromiumPath is the browser, handed to the agent (default: "chromium"
	// on PATH).
	ChromiumPath string
	// Mode is "netns" (a network namespace per machine on Bridge; needs
	// root), "userns" (without root: a user and network namespace per
	// machine, Unix sockets only) or "loopback" (ports on 127.0.0.1 from
	// PortBase: confined but for the network as root, unconfined without
	// root, which needs InsecureSharedHost). Empty picks netns as root when
	// the bridge can be set up (else loopback), and userns without root
	// when the host allows user namespaces (else, with InsecureSharedHost,
	// loopback).
	Mode string
	// SocketDir is where machines of mode userns get their socket
	// directories, SocketDir/<hash> (default TmpDir/mc-sockets-<uid>). It
	// must be a directory of the controller's user that only it can open
	// (0700); New makes it. The gateway dials only sockets below it.
	SocketDir string
	// SlirpPath is slirp4netns (Debian package slirp4netns), which gives
	// userns machines egress when Egress is on (default: on PATH).
	SlirpPath string
	// Bridge is the Linux bridge of netns mode (default "mcbr0"). It also
	// names the lease pool, "local/<Bridge>", in both modes.
	Bridge string
	// Network is the machine network of netns mode (default 10.200.0.0/24);
	// the bridge holds .1 and slot s gets base+2+s.
	Network netip.Prefix
	// TmpDir is where each unconfined machine gets its private temporary
	// directory TmpDir/mc-<hash> (0700), the TMPDIR of its Chromium
	// (default /tmp); a confined machine has a /tmp of its own. Chromium
	// binds a Unix socket two levels below it, so TmpDir may be at most
	// MaxTmpDirLen bytes long.
	TmpDir string
	// PortBase is the first loopback port (default 21000); slot s uses
	// PortBase+4s+{0 VNC, 1 agent}; +2 and +3 are unused (they were
	// DevTools and the local pages, now both on the DevTools pipe). The
	// range must stay out of the kernel's ephemeral port range
	// (net.ipv4.ip_local_port_range, usually 32768–60999), where an
	// outgoing connection may hold a port first: a PortBase inside it is
	// refused, and MaxMachines is capped so that the range ends below it.
	PortBase int
	// DisplayBase is the X display of slot 0 (default 100); slot s uses
	// :(DisplayBase+s). Display sockets are host-wide, so two drivers on one
	// host need distinct bases.
	DisplayBase int
	// MaxMachines caps the machines on this host (default: MemTotal / 500 MB,
	// and never more than the network, port or display range holds; in
	// loopback mode the ports end below the ephemeral range when PortBase is
	// below it).
	MaxMachines int
	// Geometry is the default screen size "WxH" (default "1280x800") for
	// specs that do not set one.
	Geometry string
	// Egress lets netns machines reach beyond the host (IP forwarding and
	// MASQUERADE), and userns machines through slirp4netns, never the host
	// or a private range; off by default.
	Egress bool
	// CLIDir is the directory of the provider CLIs (claude, codex, gemini),
	// handed to the agent as --cli-dir (default
	// /opt/master-controller/clis/current/node_modules/.bin, where
	// scripts/deps.sh installs the versions pinned in clis/package-lock.json).
	CLIDir string
	// Test is for tests only (see MachineTestHooks); nil otherwise.
	Test *MachineTestHooks
	// StopGrace is how long Destroy waits after SIGTERM before SIGKILL
	// (default 500 ms).
	StopGrace time.Duration

	// Limits bound each confined machine (defaults: 1 GiB of memory, 512
	// processes, an equal CPU share).
	Limits Limits
	// TmpSize, HomeSize and ShmSize bound a confined machine's /tmp, /home
	// and /dev/shm, tmpfs whose pages count against its memory limit
	// (defaults 256 MiB each).
	TmpSize, HomeSize, ShmSize int64
	// UIDBase is the first uid of confined machines (default 1000000): each
	// machine leases a value v from the lease pool "local/uid"; its agent
	// runs as uid and gid UIDBase+2v and its browser as UIDBase+2v+1, which
	// no other machine has while it runs.
	UIDBase int
	// CgroupParent is the cgroup below which machines get theirs, in each
	// v1 hierarchy or the unified one (default "master-controller-" and 8
	// hex digits of a hash of DataDir: Sweep removes what is below it, so
	// two controllers on one host must not share it).
	CgroupParent string
	// ReadOnlyBinds are further host paths that confined machines see
	// read-only at the same place (a directory of provider CLIs, say).
	ReadOnlyBinds []string
	// Hosts is a confined machine's /etc/hosts ("" gives localhost only).
	Hosts string
	// Env is added to the environment of every machine's agent and so of
	// its login commands ("KEY=value").
	Env []string
	// InsecureSharedHost lets a controller that is not root run machines
	// unconfined, as processes of its own user on the host's file system
	// and loopback ports: any machine's page can then read what that user
	// can. For development only; every start logs a warning.
	InsecureSharedHost bool
}

// Confined reports whether machines are confined: the controller runs as
// root, or in mode userns.
func (d *Driver) Confined() bool { return d.confined || d.mode == ModeUserns }

// Driver runs machines as local process groups. It implements mc.Driver.
type Driver struct {
	cfg   Config
	mode  string
	store mc.LeaseStore
	pool  *netpool.Pool
	log   *slog.Logger
	max   int
	// confined machines (as root): namespaces, cgroup, uid, firewall.
	confined bool
	cgroupV  int // cgroup version for machines (1 or 2)

	mu    sync.Mutex
	locks map[string]*idLock
	procs map[string]*proc // machines this process started
	// releaseBridge gives back the mark that this process uses the
	// bridge (netpool's Use, in netns mode), so that "network down"
	// refuses while it runs; nil when there is none.
	releaseBridge func()
}

var _ mc.Driver = (*Driver)(nil)

// proc is an agent process this Driver started.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
	oom    bool          // the machine's cgroup had an OOM kill (set before exited is closed)
}

type idLock struct {
	mu   sync.Mutex
	refs int
}

// New returns a local driver. In netns mode (or the automatic choice as
// root) it makes sure the bridge exists; with Mode empty a bridge that cannot
// be set up makes it fall back to loopback, with one log line.
// Errors: EINVALID for a bad configuration; the bridge's error when Mode is
// "netns" and the bridge cannot be set up.
func New(cfg Config, store mc.LeaseStore, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if store == nil {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoLeaseStore, "the local driver needs a lease store")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pool, err := netpool.New(netpool.Config{Bridge: cfg.Bridge, Network: cfg.Network, Egress: cfg.Egress}, store, log)
	if err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, store: store, pool: pool, log: log,
		locks: map[string]*idLock{}, procs: map[string]*proc{}}
	unprivileged := os.Geteuid() != 0
	if !unprivileged {
		d.confined = true
		if d.cgroupV = CgroupVersion(); d.cgroupV == 0 {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoCgroups,
				"local driver: no cgroup file system with the memory and pids controllers at %s; machines cannot be confined", CgroupRoot)
		}
	} else if cfg.Mode == "" || cfg.Mode == ModeUserns {
		if err := userNSCheck(); err == nil {
			cfg.Mode = ModeUserns
		} else if cfg.Mode == ModeUserns || !cfg.InsecureSharedHost {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoUserNamespaces,
				"local driver: not root and %v, so machines cannot be confined; run as root, allow user namespaces, or pass --insecure-shared-host for development", err)
		}
	}
	if unprivileged && cfg.Mode != ModeUserns && !cfg.InsecureSharedHost {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonUnconfinedNeedsFlag,
			"local driver: mode %s without root runs machines unconfined (any page could read this user's files); use mode userns, run as root, or pass --insecure-shared-host for development", cfg.Mode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ready := false
	defer func() {
		if !ready && d.releaseBridge != nil {
			d.releaseBridge() // a driver that failed uses no bridge
		}
	}()
	switch cfg.Mode {
	case ModeUserns:
		if !unprivileged {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadMode, "local driver mode userns is for a controller that is not root; as root, use netns")
		}
		if cfg.Egress {
			if _, err := exec.LookPath(cfg.SlirpPath); err != nil {
				return nil, mc.Errorf(mc.EINVALID, mc.ReasonEgressUnavailable,
					"local driver: egress for userns machines needs slirp4netns (Debian package slirp4netns): %v", err)
			}
			if err := tunCheck(); err != nil {
				return nil, mc.Errorf(mc.EINVALID, mc.ReasonEgressUnavailable, "local driver: egress for userns machines: %v", err)
			}
		}
		if err := privateDir(cfg.SocketDir); err != nil {
			return nil, err
		}
		if v := CgroupVersion(); v != 0 && cgroupDelegated(v, cfg.CgroupParent) {
			d.cgroupV = v
		}
		d.mode = ModeUserns
	case ModeLoopback:
		d.mode = ModeLoopback
	case ModeNetns:
		if os.Geteuid() != 0 {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonNetnsNeedsRoot, "local driver mode netns needs root")
		}
		if d.releaseBridge, err = pool.Use(ctx); err != nil {
			return nil, err
		}
		if err := pool.Setup(ctx); err != nil {
			return nil, fmt.Errorf("set up bridge %s: %w", cfg.Bridge, err)
		}
		d.mode = ModeNetns
	case "":
		d.mode = ModeLoopback
		if os.Geteuid() == 0 {
			// A lock that cannot be had only leaves "network down"
			// unaware of this controller: it decides no isolation.
			if d.releaseBridge, err = pool.Use(ctx); err != nil {
				log.Warn("local driver: the bridge cannot be marked in use; network down would not see this controller",
					"bridge", cfg.Bridge, mc.LogError, err)
			}
			if err := pool.Setup(ctx); err != nil {
				if d.releaseBridge != nil {
					d.releaseBridge()
					d.releaseBridge = nil
				}
				log.Warn("local driver: bridge unusable, machines run on loopback ports", "bridge", cfg.Bridge, mc.LogError, err)
			} else {
				d.mode = ModeNetns
			}
		}
	default:
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadMode, "local driver mode %q is not netns, userns or loopback", cfg.Mode)
	}
	if lo, hi := ephemeralPorts(); d.mode == ModeLoopback && cfg.PortBase+3 >= lo && cfg.PortBase <= hi {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonPortBaseEphemeral,
			"port base %d: the ports of slot 0 (%d-%d) overlap the ephemeral port range %d-%d (net.ipv4.ip_local_port_range); use a base of at most %d, or above %d",
			cfg.PortBase, cfg.PortBase, cfg.PortBase+3, lo, hi, lo-4, hi)
	}
	d.max = d.capacity()
	if d.max <= 0 {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonNoCapacity,
			"local driver: no machine fits (port base %d, display base %d)", cfg.PortBase, cfg.DisplayBase)
	}
	if err := os.MkdirAll(cfg.TmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("create tmp dir %s: %w", cfg.TmpDir, err)
	}
	if err := os.MkdirAll(d.machinesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	d.removeStaleNew()
	if !d.Confined() {
		log.Warn("local driver: INSECURE shared host: machines run unconfined as this user; development only",
			mc.LogReason, mc.ReasonInsecureSharedHost)
	}
	if d.confined && d.mode == ModeNetns {
		if err := pool.Firewall(ctx); err != nil {
			return nil, fmt.Errorf("firewall for bridge %s: %w", cfg.Bridge, err)
		}
	}
	if d.mode == ModeUserns && d.cgroupV == 0 {
		log.Warn("local driver: no cgroup that this user may make below "+cfg.CgroupParent+": machines' memory is not limited; processes are limited by RLIMIT_NPROC only",
			mc.LogReason, mc.ReasonNoCgroups)
	}
	ready = true
	log.Info("local driver ready", "mode", d.mode, "confined", d.Confined(), "cgroup_version", d.cgroupV,
		"bridge", cfg.Bridge, "network", cfg.Network.String(), "max_machines", d.max)
	return d, nil
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		if os.Geteuid() == 0 {
			c.DataDir = "/var/lib/master-controller/local"
		} else {
			base := os.Getenv("XDG_STATE_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return fmt.Errorf("default data dir: %w", err)
				}
				base = filepath.Join(home, ".local", "state")
			}
			c.DataDir = filepath.Join(base, "master-controller", "local")
		}
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", c.DataDir, err)
	}
	c.DataDir = abs
	if c.TmpDir == "" {
		c.TmpDir = "/tmp"
	}
	if c.TmpDir, err = filepath.Abs(c.TmpDir); err != nil {
		return fmt.Errorf("tmp dir %s: %w", c.TmpDir, err)
	}
	if n := len(c.TmpDir); n > MaxTmpDirLen {
		return mc.Errorf(mc.EINVALID, mc.ReasonTmpDirTooLong,
			"tmp dir %s is %d bytes long, more than %d: Chromium's socket %s below it would exceed a Unix socket path's 107 bytes",
			c.TmpDir, n, MaxTmpDirLen, machineTmpPrefix+"01234567"+singletonSocketTail)
	}
	if c.AgentPath == "" {
		c.AgentPath = "mc-agent"
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "mc-agent"); isExecutable(p) {
				c.AgentPath = p
			}
		}
	}
	if c.CLIDir == "" {
		c.CLIDir = DefaultCLIDir
	}
	if c.XvncPath == "" {
		c.XvncPath = "Xvnc"
	}
	if c.ChromiumPath == "" {
		c.ChromiumPath = "chromium"
	}
	if c.SlirpPath == "" {
		c.SlirpPath = "slirp4netns"
	}
	if c.SocketDir == "" {
		c.SocketDir = filepath.Join(c.TmpDir, "mc-sockets-"+strconv.Itoa(os.Geteuid()))
	}
	if c.SocketDir, err = filepath.Abs(c.SocketDir); err != nil {
		return fmt.Errorf("socket dir %s: %w", c.SocketDir, err)
	}
	if n := len(c.SocketDir + "/01234567/" + mc.AgentSocket); n > 107 {
		return mc.Errorf(mc.EINVALID, mc.ReasonTmpDirTooLong,
			"socket dir %s is too long: a machine's socket below it would exceed a Unix socket path's 107 bytes", c.SocketDir)
	}
	if c.Bridge == "" {
		c.Bridge = netpool.DefaultBridge
	}
	if !c.Network.IsValid() {
		c.Network = netpool.DefaultNetwork
	}
	if c.PortBase == 0 {
		c.PortBase = DefaultPortBase
	}
	if c.PortBase < 1024 || c.PortBase > 65535-3 {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadPortBase, "port base %d is outside [1024, 65532]", c.PortBase)
	}

	if c.DisplayBase == 0 {
		c.DisplayBase = 100
	}
	if c.Geometry == "" {
		c.Geometry = "1280x800"
	}
	if _, _, err := parseGeometry(c.Geometry); err != nil {
		return err
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 500 * time.Millisecond
	}
	if c.Limits.Memory <= 0 {
		c.Limits.Memory = 1 << 30
	}
	if c.Limits.Pids <= 0 {
		c.Limits.Pids = 512
	}
	if c.Limits.CPUWeight <= 0 {
		c.Limits.CPUWeight = 100
	}
	if c.Limits.Memory < 64<<20 || c.Limits.Pids < 32 || c.Limits.CPUWeight > 10000 {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadLimits, "machine limits %d bytes, %d pids, cpu weight %d: want at least 64 MiB and 32 pids, weight at most 10000",
			c.Limits.Memory, c.Limits.Pids, c.Limits.CPUWeight)
	}
	for _, sz := range []*int64{&c.TmpSize, &c.HomeSize, &c.ShmSize} {
		if *sz <= 0 {
			*sz = 256 << 20
		}
	}
	if c.UIDBase == 0 {
		c.UIDBase = DefaultUIDBase
	}
	if c.UIDBase < 1000 || c.UIDBase > 1<<31-uidRange {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadUIDBase, "uid base %d is outside [1000, %d]", c.UIDBase, 1<<31-uidRange)
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "master-controller-" + netpool.Hash(c.DataDir)
	}
	for _, p := range c.ReadOnlyBinds {
		if !filepath.IsAbs(p) {
			return mc.Errorf(mc.EINVALID, mc.ReasonBadBind, "read-only bind %q is not an absolute path", p)
		}
	}
	return nil
}

// DefaultUIDBase is the default first uid of confined machines: far above
// the host's users and the usual subordinate id ranges (100000-165535).
const DefaultUIDBase = 1000000

// uidRange is the number of uids that machines may lease.
const uidRange = 65536

// uidPool is the lease pool of machine uids.
const uidPool = "local/uid"

// capacity is the number of machines this host holds: the configured or
// memory-derived maximum, bounded by the slots that the mode has.
func (d *Driver) capacity() int {
	n := d.cfg.MaxMachines
	if n <= 0 {
		n = max(1, int(memTotal()/(500<<20)))
	}
	switch d.mode {
	case ModeNetns:
		n = min(n, d.pool.Size())
	case ModeUserns:
	default:
		n = min(n, portSlots(d.cfg.PortBase))
	}
	return min(n, 30000-d.cfg.DisplayBase)
}

// DefaultPortBase is the default first loopback port: below the ephemeral
// port range (32768–60999 by default), with room for 2941 machines.
const DefaultPortBase = 21000

// portSlots is the number of 4-port slots from base that end below the
// ephemeral port range when base is below it, else below 65536.
func portSlots(base int) int {
	end := 65536
	if lo, _ := ephemeralPorts(); base < lo {
		end = lo
	}
	return (end - base) / 4
}

// ephemeralPorts returns the kernel's ephemeral port range
// (net.ipv4.ip_local_port_range), or Linux's default 32768–60999 when it
// cannot be read.
func ephemeralPorts() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && 0 < l && l <= h {
				return l, h
			}
		}
	}
	return 32768, 60999
}

// memTotal returns MemTotal from /proc/meminfo in bytes (0 if unknown).
func memTotal() int64 { return meminfo("MemTotal:") }

// meminfo returns the /proc/meminfo field key ("MemTotal:") in bytes (0 if
// unknown).
func meminfo(key string) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == key {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Name returns "local".
func (d *Driver) Name() string { return Name }

// Mode returns the isolation mode in use: "netns" or "loopback".
func (d *Driver) Mode() string { return d.mode }

// Pool returns the lease pool's name, "local/<bridge>".
func (d *Driver) Pool() string { return d.pool.Name() }

// Capabilities reports netns, userns or loopback isolation, the machine
// network (or 127.0.0.1/32 with the port range, or the socket directory)
// and the machine limit.
func (d *Driver) Capabilities() mc.Capabilities {
	c := mc.Capabilities{Isolation: d.mode, MaxMachines: d.max}
	if d.mode == ModeUserns {
		c.SocketDir = d.cfg.SocketDir
		return c
	}
	if d.mode == ModeNetns {
		c.Network = d.pool.Config().Network
		return c
	}
	c.Network = netip.MustParsePrefix("127.0.0.1/32")
	c.PortLo = d.cfg.PortBase
	c.PortHi = d.cfg.PortBase + 4*d.max - 1
	return c
}

// MachineDir is the directory of machine id on the host:
// DataDir/machines/<8 hex of sha256(id)>, the same short hash as its
// namespace.
func (d *Driver) MachineDir(id string) string {
	return filepath.Join(d.machinesDir(), netpool.Hash(id))
}

// MachineTmpDir is the private temporary directory of machine id on the
// host: TmpDir/mc-<8 hex of sha256(id)>, Chromium's TMPDIR (the agent's
// --tmp-dir). Create makes it (0700) and Destroy removes it.
func (d *Driver) MachineTmpDir(id string) string {
	return filepath.Join(d.cfg.TmpDir, machineTmpPrefix+netpool.Hash(id))
}

// machineTmpPrefix starts the names of machines' temporary directories.
const machineTmpPrefix = "mc-"

// singletonSocketTail is where Chromium 156 binds its singleton socket below
// its TMPDIR (XXXXXX: six random characters).
const singletonSocketTail = "/org.chromium.Chromium.XXXXXX/SingletonSocket"

// MaxTmpDirLen is the longest Config.TmpDir: Chromium's singleton socket
// TmpDir/mc-<8 hex>/org.chromium.Chromium.XXXXXX/SingletonSocket must fit a
// Unix socket path (at most 107 bytes).
const MaxTmpDirLen = 107 - len("/"+machineTmpPrefix+"01234567") - len(singletonSocketTail)

func (d *Driver) machinesDir() string { return filepath.Join(d.cfg.DataDir, "machines") }

// lock serializes Create, Destroy on one id.
func (d *Driver) lock(id string) func() {
	d.mu.Lock()
	l := d.locks[id]
	if l == nil {
		l = &idLock{}
		d.locks[id] = l
	}
	l.refs++
	d.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(d.locks, id)
		}
		d.mu.Unlock()
	}
}

func (d *Driver) proc(id string) *proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.procs[id]
}

// idPattern bounds machine ids to what is safe in a path and a log line.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validID(id string) bool { return idPattern.MatchString(id) }

func parseGeometry(g string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(g, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w < 320 || h < 200 || w > 7680 || h > 4320 {
		return 0, 0, mc.Errorf(mc.EINVALID, mc.ReasonBadGeometry, "geometry %q is not WxH within 320x200 to 7680x4320", g)
	}
	return w, h, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
