package local

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Finding is one thing the host gives (or lacks) for machines.
type Finding struct {
	// Name is short and stable ("cgroup", "userns", "firewall", ...).
	Name string `json:"name"`
	// Value says what was found, in a few words.
	Value string `json:"value"`
	// OK is false when the finding keeps machines from running confined.
	OK bool `json:"ok"`
}

// Doctor examines the host for the local driver as configured by cfg
// (defaults filled in) and says, one finding each, what it gives: cgroup
// version and controllers, user namespaces, the firewall tool, the bridge,
// Xvnc, Chromium, the agent, provider CLIs, free memory, the open-file limit,
// and last the isolation the driver will use. It changes nothing.
func Doctor(cfg Config) []Finding {
	_ = cfg.defaults()
	var fs []Finding
	add := func(name, value string, ok bool) { fs = append(fs, Finding{name, value, ok}) }
	root := os.Geteuid() == 0

	v := CgroupVersion()
	switch v {
	case 2:
		b, _ := os.ReadFile(filepath.Join(CgroupRoot, "cgroup.controllers"))
		add("cgroup", "v2 ("+strings.Join(strings.Fields(string(b)), ",")+")", true)
	case 1:
		var ctls []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if _, err := os.Stat(filepath.Join(CgroupRoot, c, "cgroup.procs")); err == nil {
				ctls = append(ctls, c)
			}
		}
		add("cgroup", "v1 ("+strings.Join(ctls, ",")+")", true)
	default:
		add("cgroup", "none with memory and pids", false)
	}
	usernsErr := userNSCheck()
	if usernsErr == nil {
		add("userns", "unprivileged user namespaces work (max "+strconv.Itoa(readInt("/proc/sys/user/max_user_namespaces"))+")", true)
	} else {
		add("userns", usernsErr.Error(), false)
	}
	fw := "none (install iptables or nftables)"
	fwOK := false
	for _, t := range []string{"iptables", "nft"} {
		if p, err := exec.LookPath(t); err == nil {
			fw, fwOK = p, true
			break
		}
	}
	add("firewall", fw, fwOK)
	if fileExists("/sys/class/net/" + cfg.Bridge + "/bridge") {
		add("bridge", cfg.Bridge+" up", true)
	} else {
		add("bridge", cfg.Bridge+" absent (created at start as root)", root)
	}
	for _, b := range []struct{ name, path, pkg string }{
		{"xvnc", cfg.XvncPath, "tigervnc-standalone-server"},
		{"chromium", cfg.ChromiumPath, "chromium"},
		{"agent", cfg.AgentPath, "build ./cmd/mc-agent"},
		{"ip", "ip", "iproute2"},
		{"slirp4netns", cfg.SlirpPath, "slirp4netns; egress of machines without root"},
	} {
		if p, err := exec.LookPath(b.path); err == nil {
			add(b.name, p, true)
		} else {
			add(b.name, "missing ("+b.pkg+")", false)
		}
	}
	// The login commands find the CLIs in CLIDir (bound into the machine),
	// not on the controller's PATH.
	var clis []string
	for _, c := range []string{"claude", "codex", "gemini"} {
		if p := filepath.Join(cfg.CLIDir, c); isExecutable(p) {
			clis = append(clis, p)
		}
	}
	if len(clis) == 0 {
		add("clis", "none of claude, codex, gemini in "+cfg.CLIDir+" (only the demo provider works; scripts/deps.sh installs them)", true)
	} else {
		add("clis", strings.Join(clis, ","), true)
	}
	add("memory", fmt.Sprintf("%d MiB available of %d MiB", memAvailable()>>20, memTotal()>>20), true)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		add("nofile", fmt.Sprintf("%d (hard %d)", rl.Cur, rl.Max), rl.Cur >= 4096)
	}
	switch {
	case root && v != 0:
		mode := cfg.Mode
		if mode == "" {
			mode = ModeNetns
		}
		switch mode {
		case ModeNetns:
			add("isolation", "netns, confined: namespaces, tmpfs root, cgroup, uids per machine, Chromium sandbox, firewall", true)
		case ModeUserns:
			add("isolation", "refused: mode userns is for a controller that is not root", false)
		default:
			add("isolation", "loopback, confined but for the network: machines share the host's loopback", true)
		}
	case root:
		add("isolation", "none possible: no cgroups", false)
	case usernsErr == nil && (cfg.Mode == "" || cfg.Mode == ModeUserns):
		limits := "no cgroup this user may make below " + cfg.CgroupParent + " (cgroup v" + strconv.Itoa(v) +
			" not delegated): memory NOT limited per machine, processes by RLIMIT_NPROC " + strconv.Itoa(cfg.Limits.Pids)
		if v != 0 && cgroupDelegated(v, cfg.CgroupParent) {
			limits = "cgroup v" + strconv.Itoa(v) + " delegated below " + cfg.CgroupParent + ": memory, pids, CPU limited"
		}
		add("isolation", "userns, confined without root: user, mount, PID, IPC, UTS and network namespaces, tmpfs root, "+
			"one uid per machine (the controller's on the host), Chromium sandbox, Unix sockets only in "+cfg.SocketDir+"; "+limits, true)
		if cfg.Egress {
			if err := tunCheck(); err != nil {
				add("egress", "refused: "+err.Error(), false)
			} else {
				add("egress", "slirp4netns, host loopback closed, host addresses and private ranges routed nowhere", true)
			}
		}
	case cfg.InsecureSharedHost:
		add("isolation", "INSECURE shared host: machines unconfined as this user (development only)", false)
	case usernsErr != nil:
		add("isolation", "refused: not root and no user namespaces (run as root, allow user namespaces, or --insecure-shared-host for development)", false)
	default:
		add("isolation", "refused: mode "+cfg.Mode+" without root is unconfined (use mode userns, run as root, or --insecure-shared-host for development)", false)
	}
	return fs
}

// Summary is the findings on one line ("name=value; ..."), as serve logs
// them at start.
func Summary(fs []Finding) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, f.Name+"="+f.Value)
	}
	return strings.Join(parts, "; ")
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// memAvailable returns MemAvailable from /proc/meminfo in bytes (0 if
// unknown).
func memAvailable() int64 { return meminfo("MemAvailable:") }
