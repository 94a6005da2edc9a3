package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/netpool"
)

// Files in a machine's home that hand the agent its secrets (0600).
const (
	tokenFile       = ".mc-agent-token"
	vncPasswordFile = ".mc-vnc-password"
	agentLogFile    = "agent.log"
)

// Create leases a slot (and, confined, a uid), creates the machine's
// directory (home 0700 with the secret files 0600, which only the controller
// and, copied into the machine, the agent's uid can read; machine.json), its
// namespace and veth in netns mode, and starts the machine: confined, the
// first process of its namespaces in a cgroup of its own (startConfined);
// else mc-agent in a process group of its own with a temporary directory
// (0700) on the host. It returns once the machine's first process runs;
// readiness is the caller's to wait for. On error (a cancelled ctx included)
// everything it made is removed again.
// Errors: EINVALID (bad id, missing secrets, bad geometry), ECONFLICT (reason
// "machine_exists") when the machine is already running, EUNAVAILABLE
// ("pool_exhausted"), EINTERNAL.
func (d *Driver) Create(ctx context.Context, spec mc.MachineSpec) (mc.Machine, error) {
	if !validID(spec.ID) {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonBadMachineID, "machine id is not valid")
	}
	if spec.Secrets.AgentToken.IsZero() || spec.Secrets.VNCPassword.IsZero() {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonNoMachineSecrets, "machine %s has no agent token or VNC password", spec.ID)
	}
	w, h := spec.Width, spec.Height
	if w == 0 && h == 0 {
		w, h, _ = parseGeometry(d.cfg.Geometry)
	}
	if _, _, err := parseGeometry(fmt.Sprintf("%dx%d", w, h)); err != nil {
		return mc.Machine{}, err
	}

	unlock := d.lock(spec.ID)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return mc.Machine{}, fmt.Errorf("create machine %s: %w", spec.ID, err)
	}
	st, err := d.readState(spec.ID)
	switch {
	case errors.Is(err, errOtherMachine):
		return mc.Machine{}, &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonMachineHashCollision,
			Message: "machine " + spec.ID + " shares its host name with a running machine; use another id", Err: err}
	case err == nil && st != nil && procfs.Alive(st.PID, st.StartTicks):
		return mc.Machine{}, &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonMachineExists,
			Message: "machine " + spec.ID + " is already running", SessionID: st.SessionID}
	}
	// Leftovers of an earlier attempt go first.
	if err := d.destroyLocked(ctx, spec.ID); err != nil {
		return mc.Machine{}, fmt.Errorf("create machine %s: %w", spec.ID, err)
	}

	m, err := d.create(ctx, spec, w, h)
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		// Cancelled midway: undo, and say so whatever step noticed.
		if err != nil {
			err = fmt.Errorf("%w (%v)", cerr, err)
		} else {
			err = cerr
		}
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := d.destroyLocked(cctx, spec.ID); derr != nil {
			d.log.Error("clean up after failed create", mc.LogMachineID, spec.ID, mc.LogError, derr)
		}
		if mc.ErrorCode(err) == mc.EUNAVAILABLE || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return mc.Machine{}, fmt.Errorf("create machine %s: %w", spec.ID, err)
		}
		d.log.Error("create machine", mc.LogMachineID, spec.ID, mc.LogReason, mc.ErrorReason(err), mc.LogError, err)
		return mc.Machine{}, fmt.Errorf("create machine %s: %w", spec.ID, err)
	}
	return m, nil
}

func (d *Driver) create(ctx context.Context, spec mc.MachineSpec, w, h int) (mc.Machine, error) {
	start := time.Now()
	slot, err := d.pool.Lease(ctx, leaseOwner(spec.ID, spec.SessionID), d.max)
	if err != nil {
		return mc.Machine{}, err
	}
	dir := d.MachineDir(spec.ID)
	home := filepath.Join(dir, "home")
	tmpDir := d.MachineTmpDir(spec.ID)
	st := &state{ID: spec.ID, SessionID: spec.SessionID, Pooled: spec.Pooled, Mode: d.mode, Pool: d.pool.Name(),
		Slot: slot, Created: start.UTC()}
	if d.mode == ModeUserns {
		st.SocketDir = d.socketDirOf(spec.ID)
		st.Cgroup = d.cgroupV
		if d.cgroupV != 0 {
			st.CgroupDirs = cgroupOf(d.cgroupV, d.cfg.CgroupParent, netpool.Hash(spec.ID)).dirs
		}
	} else if d.confined {
		v, err := d.store.Lease(ctx, uidPool, leaseOwner(spec.ID, spec.SessionID), 0, uidRange/2-1)
		if err != nil {
			return mc.Machine{}, fmt.Errorf("lease uid for %s: %w", spec.ID, err)
		}
		st.UID = d.cfg.UIDBase + 2*v // and +1 for its browser
		st.Cgroup = d.cgroupV
		st.CgroupDirs = cgroupOf(d.cgroupV, d.cfg.CgroupParent, netpool.Hash(spec.ID)).dirs
	} else {
		st.TmpDir = tmpDir
	}
	if d.mode == ModeNetns {
		st.Namespace, st.Veth = netpool.Names(spec.ID)
	}
	// The directory and its state exist before anything else on the host,
	// so that whatever follows can always be found and removed.
	if err := d.newMachineDir(st); err != nil {
		return mc.Machine{}, err
	}
	for name, s := range map[string]mc.Secret{tokenFile: spec.Secrets.AgentToken, vncPasswordFile: spec.Secrets.VNCPassword} {
		if err := writeSecret(filepath.Join(home, name), s); err != nil {
			return mc.Machine{}, err
		}
	}
	// After the directory (whose state names it), so that it is never
	// without a machine directory. A confined machine has a /tmp of its own.
	if st.SocketDir != "" {
		if err := os.Mkdir(st.SocketDir, 0o700); err != nil {
			return mc.Machine{}, fmt.Errorf("create socket dir: %w", err)
		}
	} else if !d.confined {
		if err := d.newTmpDir(tmpDir, dir); err != nil {
			return mc.Machine{}, err
		}
	}

	display := d.cfg.DisplayBase + slot
	var (
		m                      = mc.Machine{ID: spec.ID, Driver: Name}
		vncListen, agentListen string
		ns                     string
		netnsTook              time.Duration
	)
	switch d.mode {
	case ModeUserns:
		m.SocketDir = st.SocketDir
	case ModeNetns:
		t0 := time.Now()
		// ip runs to the end even when ctx ends (a few ms), so that no
		// half-configured device is left to the kill of a command; ctx is
		// checked right after.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		att, err := d.pool.Attach(actx, spec.ID, slot)
		cancel()
		if err != nil {
			return mc.Machine{}, err
		}
		netnsTook = time.Since(t0)
		m.IP, m.VNCPort, m.AgentPort = att.IP, nsVNCPort, nsAgentPort
		ns = att.Namespace
	default:
		base := d.cfg.PortBase + 4*slot
		m.IP, m.VNCPort, m.AgentPort = netip.MustParseAddr("127.0.0.1"), base, base+1
	}
	vncListen = m.VNCAddr().String()
	agentListen = m.AgentAddr().String()
	if m.SocketDir != "" {
		// The same directory, as the machine sees it.
		vncListen = mc.Endpoint{Network: "unix", Address: confine.SocketDir + "/" + mc.VNCSocket}.String()
		agentListen = mc.Endpoint{Network: "unix", Address: confine.SocketDir + "/" + mc.AgentSocket}.String()
	}
	st.Machine = m
	if err := ctx.Err(); err != nil {
		return mc.Machine{}, err
	}

	args := []string{
		"--listen", agentListen,
		"--vnc-listen", vncListen,
		"--display", strconv.Itoa(display),
		"--geometry", fmt.Sprintf("%dx%d", w, h),
		"--xvnc", d.cfg.XvncPath,
		"--chromium", d.cfg.ChromiumPath,
		"--cli-dir", cliDir(d.cfg.CLIDir),
	}
	if d.mode == ModeUserns {
		// One uid in the machine: the agent starts Chromium itself.
		args = append(args, "--home", confine.Home, "--tmp-dir", confine.TmpDir,
			"--token-file", confine.TokenFile, "--vnc-password-file", confine.VNCPasswordFile,
			"--xauth-file", confine.XAuthFile)
	} else if d.confined {
		args = append(args, "--home", confine.Home, "--tmp-dir", confine.TmpDir,
			"--token-file", confine.TokenFile, "--vnc-password-file", confine.VNCPasswordFile,
			"--launcher", "--browser-home", confine.BrowserHome, "--browser-tmp-dir", confine.BrowserTmpDir,
			"--xauth-file", confine.XAuthFile)
	} else {
		args = append(args, "--home", home, "--tmp-dir", tmpDir,
			"--token-file", filepath.Join(home, tokenFile), "--vnc-password-file", filepath.Join(home, vncPasswordFile))
	}
	args = append(args, d.testAgentArgs()...)
	if spec.StartURL != "" {
		args = append(args, "--start-url", spec.StartURL)
	}
	logf, err := os.OpenFile(filepath.Join(dir, agentLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return mc.Machine{}, fmt.Errorf("open agent log: %w", err)
	}
	defer logf.Close()
	var cmd *exec.Cmd
	if d.mode == ModeUserns {
		cmd, err = d.startUserNS(st, dir, args, logf)
	} else if d.confined {
		cmd, err = d.startConfined(ctx, st, dir, ns, args, logf)
	} else {
		cmd, err = d.startUnconfined(ns, home, args, logf)
	}
	if err != nil {
		return mc.Machine{}, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	d.mu.Lock()
	d.procs[spec.ID] = p
	d.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if n := d.oomKills(spec.ID); n > 0 {
			p.oom = true
			d.log.Warn("machine ran out of memory", mc.LogMachineID, spec.ID, mc.LogReason, mc.ReasonMachineOOM, "oom_kills", n)
		}
		close(p.exited)
		if err != nil {
			// The agent's last words say why (it logs no secrets).
			d.log.Info("machine agent exited", mc.LogMachineID, spec.ID, "status", exitStatus(err),
				"log_tail", logTail(filepath.Join(dir, agentLogFile), 600))
		} else {
			d.log.Info("machine agent exited", mc.LogMachineID, spec.ID, "status", exitStatus(err))
		}
	}()

	st.PID, st.PGID = cmd.Process.Pid, cmd.Process.Pid
	if info, ok := procfs.ReadStat(st.PID); ok {
		st.StartTicks = info.StartTicks
	}
	st.Started = time.Now().UTC()
	if err := d.writeState(st); err != nil {
		return mc.Machine{}, err
	}
	d.log.Info("machine created", mc.LogMachineID, spec.ID, mc.LogSessionID, spec.SessionID,
		"mode", d.mode, "confined", d.Confined(), "slot", slot, "addr", vncListen, "pid", st.PID,
		"netns_ms", netnsTook.Milliseconds(), "took_ms", time.Since(start).Milliseconds())
	return m, nil
}

// startUnconfined starts the agent as a plain process of the controller's
// user (InsecureSharedHost), inside network namespace ns when it is not "".
func (d *Driver) startUnconfined(ns, home string, args []string, logf *os.File) (*exec.Cmd, error) {
	var cmd *exec.Cmd
	if ns != "" {
		// ip execs the agent after entering the namespace: same pid.
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, d.cfg.AgentPath}, args...)...)
	} else {
		cmd = exec.Command(d.cfg.AgentPath, args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = home
	cmd.Env = agentEnv(home, d.cfg.Env)
	// A process group of its own, so that Destroy ends the agent, Xvnc and
	// Chromium together; no parent-death signal, since machines outlive a
	// restarting controller.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	return cmd, nil
}

// initSpecFile, in a machine's directory, is the confinement that its
// "mc-agent init" reads; rootDir is the mount point of its root tmpfs.
const (
	initSpecFile = "confine.json"
	rootDir      = "root"
)

// startConfined starts "mc-agent init" as the first process of new mount,
// PID, IPC and UTS namespaces, in network namespace ns when it is not "",
// puts it into the machine's new cgroup, and only then lets it go on (it
// waits for its fd 3 to close): everything of the machine runs inside the
// cgroup's limits.
func (d *Driver) startConfined(ctx context.Context, st *state, dir, ns string, args []string, logf *os.File) (*exec.Cmd, error) {
	root := filepath.Join(dir, rootDir)
	if err := os.Mkdir(root, 0o700); err != nil {
		return nil, fmt.Errorf("create machine root: %w", err)
	}
	spec := d.initSpec(st, dir, root)
	spec.UID, spec.GID, spec.BrowserUID, spec.BrowserGID = st.UID, st.UID, st.UID+1, st.UID+1
	specPath, err := writeInitSpec(dir, spec)
	if err != nil {
		return nil, err
	}
	cg := cgroupOf(d.cgroupV, d.cfg.CgroupParent, netpool.Hash(st.ID))
	if err := cg.create(d.cfg.Limits); err != nil {
		return nil, err
	}
	// A process group of its own for Destroy; no parent-death signal, since
	// machines outlive a restarting controller.
	attr := &syscall.SysProcAttr{Setpgid: true,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
	start := func(start func() error) error { return start() }
	if ns != "" {
		// Forked from a thread inside the machine's network namespace, the
		// init starts there.
		start = func(start func() error) error { return netpool.Do(ns, start) }
	}
	return d.startInit(specPath, args, logf, attr, start, cg, nil)
}

// initSpec is the confinement of the machine in dir that both confined
// modes share: its root, secrets, tmpfs sizes, binds, hosts, environment
// and host name.
func (d *Driver) initSpec(st *state, dir, root string) confine.Spec {
	return confine.Spec{
		Root:      root,
		TokenFile: filepath.Join(dir, "home", tokenFile), VNCPasswordFile: filepath.Join(dir, "home", vncPasswordFile),
		TmpSize: d.cfg.TmpSize, HomeSize: d.cfg.HomeSize, ShmSize: d.cfg.ShmSize,
		ReadOnlyBinds: d.machineBinds(), Hosts: d.machineHosts(), Env: d.cfg.Env,
		Hostname: "mc-" + netpool.Hash(st.ID),
	}
}

// writeInitSpec writes spec as the confinement file of the machine in dir
// (what its init reads) and returns the file's path.
func writeInitSpec(dir string, spec confine.Spec) (string, error) {
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return "", fmt.Errorf("write machine confinement: %w", err)
	}
	path := filepath.Join(dir, initSpecFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("write machine confinement: %w", err)
	}
	return path, nil
}

// startInit starts "mc-agent init --machine specPath -- args" with attr
// (through start, which may run it from another namespace), puts it into cg
// when there is one, runs then (if not nil) with its pid, and only then lets
// it go on: the init waits for its fd 3 to close. On error the init is gone.
func (d *Driver) startInit(specPath string, args []string, logf *os.File, attr *syscall.SysProcAttr,
	start func(func() error) error, cg *cgroup, then func(pid int) error) (*exec.Cmd, error) {
	goR, goW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start machine: %w", err)
	}
	defer goW.Close()
	cmd := exec.Command(d.cfg.AgentPath, append([]string{"init", "--machine", specPath, "--go-fd", "3", "--"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.ExtraFiles = []*os.File{goR}
	cmd.SysProcAttr = attr
	err = start(cmd.Start)
	goR.Close()
	if err != nil {
		return nil, fmt.Errorf("start machine init: %w", err)
	}
	fail := func(err error) (*exec.Cmd, error) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	if cg != nil {
		if err := cg.add(cmd.Process.Pid); err != nil {
			return fail(err)
		}
	}
	if then != nil {
		if err := then(cmd.Process.Pid); err != nil {
			return fail(err)
		}
	}
	return cmd, nil // goW closes: the init goes on
}

// tmpOwnerFile, in a machine's temporary directory, holds the path of its
// machine directory: Sweep removes a temporary directory whose machine
// directory is gone, and leaves other drivers' alone.
const tmpOwnerFile = ".mc-machine-dir"

// newTmpDir creates a machine's temporary directory (0700; it must not exist
// yet: Create has removed its own leftovers, so one that exists is another's)
// and records its machine directory in it.
func (d *Driver) newTmpDir(tmpDir, machineDir string) error {
	if err := os.Mkdir(tmpDir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonTmpDirExists,
				Message: "temporary directory " + tmpDir + " exists and is not this driver's", Err: err}
		}
		return fmt.Errorf("create tmp dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmpDir, tmpOwnerFile), []byte(machineDir+"\n"), 0o600); err != nil {
		return fmt.Errorf("create tmp dir: %w", err)
	}
	return nil
}

// writeSecret writes s to a new 0600 file.
func writeSecret(path string, s mc.Secret) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if _, err := f.WriteString(s.Reveal()); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// agentEnv is the agent's whole environment: nothing of the controller's
// (which may hold keys) beyond PATH, plus the configured extra.
func agentEnv(home string, extra []string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return append([]string{"PATH=" + path, "HOME=" + home, "LANG=C.UTF-8", "TZ=UTC"}, extra...)
}

func exitStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	}
	return err.Error()
}

// logTail returns up to n bytes of the end of file path ("" if unreadable).
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-n)
	b := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(b, off)
	return strings.TrimSpace(string(b[:k]))
}

// leaseOwner is who holds a machine's slot in the lease store: its session,
// as the store reclaims the leases of sessions that ended; the machine
// itself when it serves none.
func leaseOwner(machineID, sessionID string) string {
	if sessionID != "" {
		return sessionID
	}
	return machineID
}
