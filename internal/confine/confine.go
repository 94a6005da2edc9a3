// Package confine builds a confined machine from inside: it is what
// "mc-agent init" runs as the first process of a machine's new mount, PID,
// IPC and UTS namespaces (as root), before it runs the agent without any
// privilege. The local driver writes a Spec; this package reads it. Facts
// behind each layer: research/isolation-here.md.
package confine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Places inside a confined machine. The controller's files, /root, /sys,
// /run of the host and other machines are not there at all.
const (
	// Home is the agent's HOME (a size-limited tmpfs below /home):
	// the Chromium profile and the credential files of a login.
	Home = "/home/mc"
	// TmpDir is the TMPDIR of Chromium and login commands, on the
	// machine's size-limited /tmp.
	TmpDir = "/tmp/mc"
	// SecretsDir holds the agent token and the VNC password (0700,
	// the agent's uid), on a tmpfs of the machine's own.
	SecretsDir = "/run/mc"
	// BrowserHome and BrowserTmpDir are HOME and TMPDIR of Chromium, which
	// runs under the browser's uid: the agent's files are out of its reach.
	BrowserHome   = "/home/browser"
	BrowserTmpDir = "/tmp/browser"
	// XAuthFile is the X authority file of the display, written by the
	// agent and read by the browser.
	XAuthFile = "/run/x/xauthority"
	// AgentPath is where the agent binary is bound, read-only.
	AgentPath = "/run/mc-agent"
	// TokenFile and VNCPasswordFile are the secret files the
	// agent is pointed at.
	TokenFile       = SecretsDir + "/token"
	VNCPasswordFile = SecretsDir + "/vnc-password"
	// ChromiumPolicyFile is Chromium's managed policy in the machine's /etc.
	ChromiumPolicyFile = "/etc/chromium/policies/managed/mc.json"
	// SocketDir is where a machine in a user namespace sees its socket
	// directory on the host (Spec.SocketDir): the agent and Xvnc listen
	// there, and the controller dials them from the host side.
	SocketDir = "/run/mc-sock"
)

// UserNSID is the uid and gid of a machine in a user namespace (Spec.UserNS):
// the one id its namespace maps, to the controller's own.
const UserNSID = 1000

// UserNSCaps are the capabilities that "mc-agent init" keeps, within its
// own user namespace only, across its exec in UserNS mode (as ambient
// capabilities, since it runs under UserNSID rather than the namespace's
// root): what building the root file system and the network needs. Init
// clears them before it starts the agent, which has none.
var UserNSCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_SETPCAP,
	unix.CAP_NET_ADMIN, unix.CAP_SYS_CHROOT, unix.CAP_SYS_ADMIN,
}

// Spec is the confinement of one machine, as `mc-agent init` reads it
// from a JSON file the driver writes (it holds no secret). Init runs as root
// as the first process of new mount, PID, IPC and UTS namespaces (and the
// machine's network namespace, when it has one), builds the machine's root
// file system, then runs the agent without any privilege.
type Spec struct {
	// Root is an empty directory on the host: the mount point of the
	// machine's root tmpfs, visible only inside its mount namespace.
	Root string `json:"root"`
	// TokenFile and VNCPasswordFile are the host files of the agent token
	// and the VNC password; init copies them into SecretsDir.
	TokenFile       string `json:"token_file"`
	VNCPasswordFile string `json:"vnc_password_file"`
	// UID and GID run the agent, Xvnc and login commands: a user of the
	// machine's own, with no supplementary groups. The agent holds the
	// machine's token and the login's credential files.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// BrowserUID and BrowserGID run Chromium, started by init for the agent
	// (see Launcher): another user of the machine's own, which can read
	// nothing of the agent's. Zero: Chromium runs as UID.
	BrowserUID int `json:"browser_uid,omitempty"`
	BrowserGID int `json:"browser_gid,omitempty"`
	// TmpSize, HomeSize and ShmSize bound /tmp, /home and /dev/shm (bytes).
	TmpSize  int64 `json:"tmp_size"`
	HomeSize int64 `json:"home_size"`
	ShmSize  int64 `json:"shm_size"`
	// ReadOnlyBinds are further host paths the machine sees read-only at
	// the same place (for example a directory of provider CLIs).
	ReadOnlyBinds []string `json:"read_only_binds,omitempty"`
	// Hosts is the machine's /etc/hosts ("" gives localhost only).
	Hosts string `json:"hosts,omitempty"`
	// Env is added to the agent's environment (and so to login commands').
	Env []string `json:"env,omitempty"`
	// Hostname is the machine's host name (UTS namespace).
	Hostname string `json:"hostname"`

	// UserNS says that init runs in a user namespace of its own (the
	// controller is not root): UID and GID are UserNSID, the only id
	// mapped; init holds UserNSCaps as ambient capabilities and clears
	// them before it starts the agent; there is no browser uid of its own.
	UserNS bool `json:"userns,omitempty"`
	// SocketDir is a host directory (0700, the controller's) that the
	// machine sees at confine.SocketDir, read-write: where its agent and
	// VNC server listen.
	SocketDir string `json:"socket_dir,omitempty"`
	// NProc, when positive, is init's RLIMIT_NPROC: in a user namespace
	// the kernel counts it per namespace, so it bounds the machine's
	// processes and threads where no cgroup can.
	NProc int `json:"nproc,omitempty"`
	// Prohibit are IPv4 prefixes that the machine's network namespace
	// routes nowhere ("prohibit" routes that only init, with CAP_NET_ADMIN,
	// could change): the host's own addresses and the private ranges,
	// beside whatever user-mode egress (slirp4netns) gives it.
	Prohibit []string `json:"prohibit,omitempty"`
	// ResolvConf, when set, is the machine's /etc/resolv.conf (instead of a
	// copy of the host's).
	ResolvConf string `json:"resolv_conf,omitempty"`
}

// Read reads a Spec from a JSON file.
func Read(path string) (Spec, error) {
	var m Spec
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("read machine config: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read machine config %s: %w", path, err)
	}
	if m.Root == "" || m.TokenFile == "" || m.VNCPasswordFile == "" || m.UID <= 0 || m.GID <= 0 {
		return m, fmt.Errorf("read machine config %s: root, token_file, vnc_password_file, uid and gid are required", path)
	}
	return m, nil
}

// Init confines this process (PID 1 of fresh namespaces, as root) as m says,
// starts the agent with agentArgs inside, reaps every process of the
// machine, forwards SIGTERM and SIGINT to the agent, and returns the agent's
// exit code once it has exited. Whatever else runs in the machine then dies
// with the PID namespace. goFD, when not nil, is read first: the driver
// closes it once it has put this process into the machine's cgroup.
func Init(m Spec, goFD *os.File, agentArgs []string, log *slog.Logger) (int, error) {
	// Privileges are dropped on this thread (no new privileges, an empty
	// bounding set), and the agent is forked from it.
	runtime.LockOSThread()
	if os.Getpid() != 1 {
		return 1, errors.New("mc-agent init must be the first process of a new PID namespace")
	}
	if goFD != nil {
		_, _ = io.Copy(io.Discard, goFD)
		goFD.Close()
	}
	t0 := time.Now()
	if m.UserNS {
		if err := userNSNetwork(m); err != nil {
			return 1, err
		}
	}
	if err := buildRoot(m); err != nil {
		return 1, err
	}
	if err := dropBoundingSet(); err != nil {
		return 1, err
	}
	var cred *syscall.Credential
	if !m.UserNS {
		cred = &syscall.Credential{Uid: uint32(m.UID), Gid: uint32(m.GID), Groups: []uint32{}}
	} else if err := dropAmbient(); err != nil {
		return 1, err
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + Home, "LANG=C.UTF-8", "TZ=UTC",
		"USER=mc", "LOGNAME=mc"}
	env = append(env, m.Env...)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	files := []uintptr{0, 1, 2}
	var srv *launchServer
	if m.BrowserUID > 0 {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 1, fmt.Errorf("launcher socket: %w", err)
		}
		srv = &launchServer{fd: pair[0], uid: m.BrowserUID, gid: m.BrowserGID, started: map[int]bool{}}
		files = append(files, uintptr(pair[1])) // the agent's LauncherFD
	}
	pid, err := syscall.ForkExec(AgentPath, append([]string{"mc-agent"}, agentArgs...), &syscall.ProcAttr{
		Dir:   Home,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: cred,
			Pdeathsig:  syscall.SIGKILL,
		},
	})
	if err != nil {
		return 1, fmt.Errorf("start agent in machine: %w", err)
	}
	log.Info("machine confined", "took_ms", time.Since(t0).Milliseconds(), "uid", m.UID, "browser_uid", m.BrowserUID)
	type request struct {
		m   launchMsg
		fds []int
	}
	var reqs chan request
	if srv != nil {
		unix.Close(int(files[3]))
		reqs = make(chan request)
		go func() {
			defer close(reqs)
			for {
				m, fds, err := recv(srv.fd)
				if err != nil {
					return
				}
				reqs <- request{m, fds}
			}
		}()
	}
	for {
		// Every child that has exited is reaped: the agent's end is the
		// machine's; others are the browser's (the agent hears of them)
		// or orphans.
		for {
			var ws syscall.WaitStatus
			got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || got <= 0 {
				break
			}
			if got == pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ws.ExitStatus(), nil
			}
			if srv != nil {
				srv.exited(got, ws)
			}
		}
		select {
		case <-sigchld:
		case s := <-sigs:
			_ = syscall.Kill(pid, s.(syscall.Signal))
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			// Forked from this thread: no new privileges, no bounding set.
			srv.handle(r.m, r.fds)
		}
	}
}

// dropAmbient clears this thread's ambient and inheritable capabilities
// (UserNS): the agent, forked from it under the same uid, then execs with
// none, whatever init holds.
func dropAmbient() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	return nil
}

// userNSNetwork sets up a machine's own network namespace from inside
// (UserNS): RLIMIT_NPROC, loopback up, and a "prohibit" route for each of
// m.Prohibit, with ip(8) from the host's /usr (before the root changes).
func userNSNetwork(m Spec) error {
	if m.NProc > 0 {
		lim := unix.Rlimit{Cur: uint64(m.NProc), Max: uint64(m.NProc)}
		if err := unix.Setrlimit(unix.RLIMIT_NPROC, &lim); err != nil {
			return fmt.Errorf("limit processes to %d: %w", m.NProc, err)
		}
	}
	if err := LoopbackUp(); err != nil {
		return err
	}
	if len(m.Prohibit) == 0 {
		return nil
	}
	var batch strings.Builder
	for _, p := range m.Prohibit {
		fmt.Fprintf(&batch, "route replace prohibit %s\n", p)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"} {
			if _, serr := os.Stat(p); serr == nil {
				ip, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("route private ranges nowhere: ip(8) not found (Debian package iproute2)")
	}
	cmd := exec.Command(ip, "-4", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("route private ranges nowhere: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// dropBoundingSet empties this thread's capability bounding set and sets no
// new privileges: whatever it forks can never regain a capability, not
// through a set-user-id binary nor through file capabilities.
func dropBoundingSet() error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no new privileges: %w", err)
	}
	return nil
}

// buildRoot makes the machine's root file system on a tmpfs at m.Root and
// pivots into it: read-only binds of /usr and what a browser needs of /etc,
// a curated /etc, size-limited tmpfs for /tmp, /home and /dev/shm, a minimal
// /dev, a fresh /proc, and nothing else of the host.
func buildRoot(m Spec) error {
	if m.Hostname != "" {
		if err := unix.Sethostname([]byte(m.Hostname)); err != nil {
			return fmt.Errorf("set host name: %w", err)
		}
	}
	// Nothing mounted here propagates to the host, and the host's later
	// mounts do not reach in.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	r := m.Root
	if err := mountTmpfs(r, 0o755, 16<<20); err != nil {
		return err
	}
	join := func(p string) string { return filepath.Join(r, p) }

	// /usr and the merged-/usr links (or binds where the host has real
	// directories).
	if err := bindRO("/usr", join("/usr")); err != nil {
		return err
	}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(d)
			if err != nil {
				return fmt.Errorf("read link %s: %w", d, err)
			}
			if err := os.Symlink(target, join(d)); err != nil {
				return fmt.Errorf("link %s: %w", d, err)
			}
		case fi.IsDir():
			if err := bindRO(d, join(d)); err != nil {
				return err
			}
		}
	}
	if err := curatedEtc(m, join("/etc")); err != nil {
		return err
	}
	if _, err := os.Stat("/var/cache/fontconfig"); err == nil {
		if err := bindRO("/var/cache/fontconfig", join("/var/cache/fontconfig")); err != nil {
			return err
		}
	}
	// Writable places, each bounded.
	if err := mountTmpfs(join("/tmp"), 0o777|fs.ModeSticky, m.TmpSize); err != nil {
		return err
	}
	if err := os.Symlink("/tmp", join("/var/tmp")); err != nil {
		return fmt.Errorf("link /var/tmp: %w", err)
	}
	// Root's, as X expects; in a user namespace root is not mapped, and
	// the one id there is, is the owner.
	xOwner := 0
	if m.UserNS {
		xOwner = m.UID
	}
	if err := mkdirOwned(join("/tmp/.X11-unix"), 0o777|fs.ModeSticky, xOwner, xOwner); err != nil {
		return err
	}
	if err := mkdirOwned(join(TmpDir), 0o700, m.UID, m.GID); err != nil {
		return err
	}
	if err := mountTmpfs(join("/home"), 0o755, m.HomeSize); err != nil {
		return err
	}
	if err := mkdirOwned(join(Home), 0o700, m.UID, m.GID); err != nil {
		return err
	}
	if m.BrowserUID > 0 {
		if err := mkdirOwned(join(BrowserTmpDir), 0o700, m.BrowserUID, m.BrowserGID); err != nil {
			return err
		}
		if err := mkdirOwned(join(BrowserHome), 0o700, m.BrowserUID, m.BrowserGID); err != nil {
			return err
		}
	}
	if err := mountTmpfs(join("/run"), 0o755, 1<<20); err != nil {
		return err
	}
	if err := mkdirOwned(join(filepath.Dir(XAuthFile)), 0o755, m.UID, m.GID); err != nil {
		return err
	}
	if err := mkdirOwned(join(SecretsDir), 0o700, m.UID, m.GID); err != nil {
		return err
	}
	for src, dst := range map[string]string{m.TokenFile: TokenFile, m.VNCPasswordFile: VNCPasswordFile} {
		if err := copyOwned(src, join(dst), 0o600, m.UID, m.GID); err != nil {
			return err
		}
	}
	if m.SocketDir != "" {
		if err := os.MkdirAll(join(SocketDir), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", SocketDir, err)
		}
		if err := unix.Mount(m.SocketDir, join(SocketDir), "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind socket directory: %w", err)
		}
		if err := unix.Mount("", join(SocketDir), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("remount socket directory: %w", err)
		}
	}
	// Further read-only paths come after the writable places, so that a
	// path below /tmp, /home or /run is not hidden by their tmpfs.
	for _, p := range m.ReadOnlyBinds {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("read-only bind %q is not an absolute path", p)
		}
		if err := bindRO(p, join(p)); err != nil {
			return err
		}
	}

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the agent binary: %w", err)
	}
	if err := bindRO(exe, join(AgentPath)); err != nil {
		return err
	}
	if err := buildDev(m, join("/dev")); err != nil {
		return err
	}
	if err := os.Mkdir(join("/proc"), 0o555); err != nil {
		return fmt.Errorf("create /proc: %w", err)
	}
	if err := unix.Mount("proc", join("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}

	// Into the new root; the host's is detached and gone.
	if err := os.Mkdir(join("/.old"), 0o700); err != nil {
		return fmt.Errorf("create old root: %w", err)
	}
	if err := unix.PivotRoot(r, join("/.old")); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("enter new root: %w", err)
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return fmt.Errorf("remove old root: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make root read-only: %w", err)
	}
	return nil
}

// curatedEtc writes the machine's /etc: its own passwd and group (root, the
// machine's user, nobody), hosts, a copy of a few host files that libraries
// read, read-only binds of fonts, certificates and Chromium's launcher
// settings, and Chromium's managed policy.
func curatedEtc(m Spec, etc string) error {
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("create /etc: %w", err)
	}
	hosts := m.Hosts
	if hosts == "" {
		hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
	}
	if m.Hostname != "" {
		hosts += "127.0.1.1\t" + m.Hostname + "\n"
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nmc:x:%d:%d:machine:%s:/bin/sh\n", m.UID, m.GID, Home)
	group := fmt.Sprintf("root:x:0:\nmc:x:%d:\n", m.GID)
	if m.BrowserUID > 0 {
		passwd += fmt.Sprintf("browser:x:%d:%d:browser:%s:/usr/sbin/nologin\n", m.BrowserUID, m.BrowserGID, BrowserHome)
		group += fmt.Sprintf("browser:x:%d:\n", m.BrowserGID)
	}
	files := map[string]string{
		"passwd":        passwd + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":         group + "nogroup:x:65534:\n",
		"hosts":         hosts,
		"hostname":      m.Hostname + "\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
		"resolv.conf":   m.ResolvConf,
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil && m.ResolvConf == "" {
		files["resolv.conf"] = string(b)
	}
	for _, f := range []string{"ld.so.cache", "ld.so.conf", "os-release", "mime.types", "protocols", "services"} {
		if b, err := os.ReadFile(filepath.Join("/etc", f)); err == nil {
			files[f] = string(b)
		}
	}
	policy, err := ChromiumPolicy()
	if err != nil {
		return err
	}
	files[strings.TrimPrefix(ChromiumPolicyFile, "/etc/")] = string(policy)
	for name, content := range files {
		p := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write /etc/%s: %w", name, err)
		}
	}
	if err := os.Symlink("/usr/share/zoneinfo/Etc/UTC", filepath.Join(etc, "localtime")); err != nil {
		return fmt.Errorf("link /etc/localtime: %w", err)
	}
	for _, d := range []string{"fonts", "ssl", "ca-certificates", "alternatives", "chromium.d", "ld.so.conf.d", "xdg"} {
		if _, err := os.Stat(filepath.Join("/etc", d)); err != nil {
			continue
		}
		if err := bindRO(filepath.Join("/etc", d), filepath.Join(etc, d)); err != nil {
			return err
		}
	}
	return nil
}

// buildDev makes a minimal /dev: the harmless character devices bound from
// the host, a private devpts for login commands' terminals, and a
// size-limited /dev/shm.
func buildDev(m Spec, dev string) error {
	if err := mountTmpfs(dev, 0o755, 64<<10); err != nil {
		return err
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bindDevice("/dev/"+d, filepath.Join(dev, d)); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("link /dev/%s: %w", name, err)
		}
	}
	pts := filepath.Join(dev, "pts")
	if err := os.Mkdir(pts, 0o755); err != nil {
		return fmt.Errorf("create /dev/pts: %w", err)
	}
	if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	return mountTmpfs(filepath.Join(dev, "shm"), 0o777|fs.ModeSticky, m.ShmSize)
}

// mountTmpfs creates dir and mounts a tmpfs of size bytes (no device
// files, no set-user-id) with mode on it.
func mountTmpfs(dir string, mode fs.FileMode, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	perm := uint32(mode.Perm())
	if mode&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	opts := fmt.Sprintf("mode=%o", perm)
	if size > 0 {
		opts += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// bindRO binds src (a directory or a file) at dst, read-only, without
// set-user-id or device files.
func bindRO(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else {
		err = touch(dst)
	}
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", src, err)
	}
	return nil
}

// bindDevice binds one character device of the host (no set-user-id).
func bindDevice(src, dst string) error {
	if err := touch(dst); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remount %s: %w", src, err)
	}
	return nil
}

func touch(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// mkdirOwned creates dir with mode and owner.
func mkdirOwned(dir string, mode fs.FileMode, uid, gid int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// copyOwned copies the file src to dst with mode and owner.
func copyOwned(src, dst string, mode fs.FileMode, uid, gid int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chown(dst, uid, gid)
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(src), err)
	}
	return nil
}

// chromiumPolicy is Chromium's managed policy in a machine: the user and the
// pages get a browser tab and nothing else. No file:// pages, no file
// chooser (Ctrl+O, uploads, "save as"), no downloads, no DevTools window, no
// internal chrome:// pages but chrome://sandbox, no new windows or
// profiles, no printing, no extensions.
var chromiumPolicy = map[string]any{
	"URLBlocklist": []string{"file://*", "chrome://*", "devtools://*", "chrome-untrusted://*",
		"view-source:*", "chrome-extension://*", "chrome-search://*", "filesystem:*"},
	// The one exception to chrome://*: chrome://sandbox only reports the
	// state of Chromium's own sandbox (read-only, it changes nothing, and
	// shows nothing of the host or of other machines). The agent reads it
	// in a background tab of its own for GET /sandbox, the evidence that
	// the browser of a machine keeps its namespace and seccomp layers.
	"URLAllowlist":              []string{"chrome://sandbox"},
	"AllowFileSelectionDialogs": false,
	"DownloadRestrictions":      3, // block all downloads
	// DevTools stay available to the agent's own session on the pipe: 2
	// (disallowed) refuses it too ("Target.attachToTarget: Not allowed").
	// The DevTools window is a devtools:// page, blocked above.
	"DeveloperToolsAvailability":   1,
	"DefaultPopupsSetting":         2, // no pop-up windows
	"IncognitoModeAvailability":    1, // disabled
	"BrowserGuestModeEnabled":      false,
	"BrowserAddPersonEnabled":      false,
	"BrowserSignin":                0,
	"SyncDisabled":                 true,
	"PrintingEnabled":              false,
	"PasswordManagerEnabled":       false,
	"AutofillAddressEnabled":       false,
	"AutofillCreditCardEnabled":    false,
	"BookmarkBarEnabled":           false,
	"EditBookmarksEnabled":         false,
	"TaskManagerEndProcessEnabled": false,
	"ExtensionInstallBlocklist":    []string{"*"},
	"ScreenCaptureAllowed":         false,
	"AudioCaptureAllowed":          false,
	"VideoCaptureAllowed":          false,
	"DefaultGeolocationSetting":    2,
	"DefaultNotificationsSetting":  2,
	"PromptForDownloadLocation":    false,
	"MetricsReportingEnabled":      false,
	"ShowHomeButton":               false,
}

// ChromiumPolicy returns the managed policy JSON that a machine's
// /etc/chromium/policies/managed holds.
func ChromiumPolicy() ([]byte, error) {
	b, err := json.MarshalIndent(chromiumPolicy, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("chromium policy: %w", err)
	}
	return append(b, '\n'), nil
}
