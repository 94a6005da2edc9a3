package local

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/netpool"
	"golang.org/x/sys/unix"
)

// Unprivileged mode (ModeUserns): the controller is not root. Each machine's
// "mc-agent init" starts in new user, mount, PID, IPC, UTS and network
// namespaces. The user namespace maps one id, confine.UserNSID, to the
// controller's own uid and gid, and nothing else: no newuidmap (a set-user-id
// helper, and /etc/subuid ranges that root must have given this user), so
// the mode works wherever unprivileged user namespaces do. The price: the
// agent and the browser of a machine share that one uid (as root they have
// two), and on the host every machine's processes run as the controller's
// uid; what keeps them off the controller's files is the mount namespace
// (a tmpfs root, the host's / detached), not file permissions.
//
// A machine has no TCP port outside its own network namespace: its agent and
// VNC server listen on Unix sockets in SocketDir/<hash> (0700, inside
// SocketDir 0700), which the machine sees at confine.SocketDir and the
// gateway dials. With Config.Egress, slirp4netns gives the namespace
// user-mode networking to the outside, with the host's loopback closed
// (--disable-host-loopback); routes that only init could change send the
// host's own addresses and every private range nowhere.
//
// Limits: a cgroup only where this user may create one (a parent that root
// delegated: made and handed over); otherwise none, and only RLIMIT_NPROC
// (counted per user namespace, so per machine) bounds processes, and the
// tmpfs sizes bound /tmp, /home and /dev/shm. Memory is then not bounded
// per machine; Doctor says so.

// ModeUserns is the isolation mode of a controller that is not root.
const ModeUserns = "userns"

// slirpTap is the interface slirp4netns makes in a machine's namespace.
const slirpTap = "tap0"

// slirpDNS is slirp4netns's DNS forwarder in its default network.
const slirpDNS = "10.0.2.3"

// tunDevice is what slirp4netns opens inside a machine's namespaces: it must
// be readable and writable by the controller's user (mode 0666, udev's
// default; some container hosts leave it 0600).
const tunDevice = "/dev/net/tun"

// tunCheck says why this user cannot open tunDevice (nil when it can).
func tunCheck() error {
	f, err := os.OpenFile(tunDevice, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w (slirp4netns needs it readable and writable by this user: mode 0666)", tunDevice, err)
	}
	return f.Close()
}

// userNSCheck is what New and Doctor ask whether this host gives machines
// user namespaces (a variable for tests of a host that does not).
var userNSCheck = userNSWorks

// userNSWorks starts a process in new user, mount, PID and network
// namespaces, as a machine would, and reports why it cannot (nil when it
// can).
func userNSWorks() error {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: confine.UserNSID, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: confine.UserNSID, HostID: os.Getgid(), Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("this host allows no unprivileged user namespaces (%v; see sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone)", err)
	}
	return nil
}

// socketDirOf is machine id's socket directory on the host.
func (d *Driver) socketDirOf(id string) string {
	return filepath.Join(d.cfg.SocketDir, netpool.Hash(id))
}

// privateDir makes dir (0700) or checks that it is a directory of this user
// that no one else can open: where machines' sockets live.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create socket dir %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket dir %s: %w", dir, err)
	}
	if !fi.IsDir() || !ownedByMe(fi) || fi.Mode().Perm()&0o077 != 0 {
		return mc.Errorf(mc.EINVALID, mc.ReasonSocketDirNotPrivate,
			"socket dir %s must be a directory of this user that only it can open (mode 0700)", dir)
	}
	return nil
}

// prohibitedRanges are what a machine's network namespace routes nowhere:
// "this" network, the private, shared (CGNAT), link-local, benchmarking,
// multicast and reserved ranges, and every IPv4 address of the host's own
// interfaces. slirp4netns's own network (10.0.2.0/24, a connected route)
// stays reachable, more specific than 10.0.0.0/8; its gateway is the host's
// loopback, closed by --disable-host-loopback.
func prohibitedRanges() []string {
	rs := []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() {
				rs = append(rs, ip.Unmap().String()+"/32")
			}
		}
	}
	return rs
}

// startUserNS starts "mc-agent init" for a machine of ModeUserns as the
// first process of its new namespaces, puts it into the machine's cgroup
// when this user may make one, gives it slirp4netns when egress is on, and
// only then lets it go on (it waits for its fd 3 to close).
func (d *Driver) startUserNS(st *state, dir string, args []string, logf *os.File) (*exec.Cmd, error) {
	root := filepath.Join(dir, rootDir)
	if err := os.Mkdir(root, 0o700); err != nil {
		return nil, fmt.Errorf("create machine root: %w", err)
	}
	spec := d.initSpec(st, dir, root)
	spec.UID, spec.GID, spec.UserNS = confine.UserNSID, confine.UserNSID, true
	spec.SocketDir, spec.NProc, spec.Prohibit = st.SocketDir, d.cfg.Limits.Pids, prohibitedRanges()
	if d.cfg.Egress {
		spec.ResolvConf = "nameserver " + slirpDNS + "\n"
	}
	specPath, err := writeInitSpec(dir, spec)
	if err != nil {
		return nil, err
	}
	var cg *cgroup
	if d.cgroupV != 0 {
		cg = cgroupOf(d.cgroupV, d.cfg.CgroupParent, netpool.Hash(st.ID))
		if err := cg.create(d.cfg.Limits); err != nil {
			return nil, err
		}
	}
	attr := &syscall.SysProcAttr{Setpgid: true,
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: confine.UserNSID, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: confine.UserNSID, HostID: os.Getgid(), Size: 1}},
		AmbientCaps: confine.UserNSCaps,
	}
	var then func(pid int) error
	if d.cfg.Egress {
		then = func(pid int) error { return d.startSlirp(pid, logf) }
	}
	return d.startInit(specPath, args, logf, attr, func(start func() error) error { return start() }, cg, then)
}

// startSlirp gives the network namespace of pid user-mode egress: a process
// in the machine's process group (Destroy ends it with the machine) that
// returns once the interface is configured.
func (d *Driver) startSlirp(pid int, logf *os.File) error {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start slirp4netns: %w", err)
	}
	defer readyR.Close()
	// --enable-sandbox (a mount namespace of slirp4netns's own) fails
	// without root ("seteuid(0) ... parent failed", slirp4netns 1.2); its
	// seccomp filter works.
	cmd := exec.Command(d.cfg.SlirpPath, "--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-seccomp", "--ready-fd=3", strconv.Itoa(pid), slirpTap)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pid}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start slirp4netns: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	done := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := readyR.Read(b[:])
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("start slirp4netns: not ready: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("start slirp4netns: not ready after 10 s")
	}
}

// cgroupDelegated reports whether this user, not root, may make machine
// cgroups below parent: root made the parent and handed it over (in each
// v1 hierarchy, or in the unified one with the memory and pids controllers
// enabled for its children).
func cgroupDelegated(version int, parent string) bool {
	var dirs []string
	if version == 2 {
		b, err := os.ReadFile(filepath.Join(CgroupRoot, parent, "cgroup.subtree_control"))
		if err != nil || !contains(strings.Fields(string(b)), "memory") || !contains(strings.Fields(string(b)), "pids") {
			return false
		}
		dirs = []string{filepath.Join(CgroupRoot, parent)}
	} else if version == 1 {
		for _, c := range []string{"memory", "pids", "cpu"} {
			dirs = append(dirs, filepath.Join(CgroupRoot, c, parent))
		}
	}
	for _, d := range dirs {
		if unix.Access(d, unix.W_OK|unix.X_OK) != nil {
			return false
		}
	}
	return len(dirs) > 0
}
