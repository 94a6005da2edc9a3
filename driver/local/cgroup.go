package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupRoot is where the host mounts its cgroup file systems.
const CgroupRoot = "/sys/fs/cgroup"

// Limits bound one machine's resources.
type Limits struct {
	// Memory is the memory limit in bytes (tmpfs pages of the machine
	// count against it).
	Memory int64
	// Pids is the most processes and threads the machine may have.
	Pids int
	// CPUWeight is the machine's CPU share relative to others: 100 is an
	// equal share (cgroup v2 cpu.weight; v1 cpu.shares is 1024·w/100).
	CPUWeight int
}

// CgroupVersion reports the cgroup version the host gives the memory and
// pids controllers: 2 when the unified hierarchy at CgroupRoot has them, 1
// when the v1 hierarchies are mounted, 0 when neither.
func CgroupVersion() int {
	if b, err := os.ReadFile(filepath.Join(CgroupRoot, "cgroup.controllers")); err == nil {
		f := strings.Fields(string(b))
		if contains(f, "memory") && contains(f, "pids") {
			return 2
		}
	}
	_, errM := os.Stat(filepath.Join(CgroupRoot, "memory", "cgroup.procs"))
	_, errP := os.Stat(filepath.Join(CgroupRoot, "pids", "cgroup.procs"))
	if errM == nil && errP == nil {
		return 1
	}
	return 0
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// cgroup is one machine's cgroup: one directory in the unified hierarchy
// (v2) or one per controller (v1: memory, pids, cpu).
type cgroup struct {
	version int
	dirs    []string // memory (or the v2 directory) first
}

// cgroupOf names machine hash h's cgroup below parent; it touches nothing.
func cgroupOf(version int, parent, h string) *cgroup {
	name := "mc-" + h
	if version == 2 {
		return &cgroup{version: 2, dirs: []string{filepath.Join(CgroupRoot, parent, name)}}
	}
	c := &cgroup{version: 1}
	for _, ctl := range []string{"memory", "pids", "cpu"} {
		c.dirs = append(c.dirs, filepath.Join(CgroupRoot, ctl, parent, name))
	}
	return c
}

// create makes the cgroup with limits l.
func (c *cgroup) create(l Limits) error {
	if c.version == 2 {
		parent := filepath.Dir(c.dirs[0])
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", parent, err)
		}
		// The parent hands its children the controllers (the root may need
		// them too; enabling what is enabled is fine). A parent delegated
		// to this user (not root) has them already, and the root is not
		// this user's to write.
		for _, d := range []string{CgroupRoot, parent} {
			if os.Geteuid() != 0 && cgroupDelegated(2, strings.TrimPrefix(parent, CgroupRoot+"/")) {
				break
			}
			if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644); err != nil {
				return fmt.Errorf("enable cgroup controllers in %s: %w", d, err)
			}
		}
	}
	for _, d := range c.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
	}
	var files map[string]string
	if c.version == 2 {
		d := c.dirs[0]
		files = map[string]string{
			filepath.Join(d, "memory.max"):      strconv.FormatInt(l.Memory, 10),
			filepath.Join(d, "memory.swap.max"): "0",
			filepath.Join(d, "pids.max"):        strconv.Itoa(l.Pids),
			filepath.Join(d, "cpu.weight"):      strconv.Itoa(l.CPUWeight),
		}
	} else {
		files = map[string]string{
			filepath.Join(c.dirs[0], "memory.limit_in_bytes"): strconv.FormatInt(l.Memory, 10),
			filepath.Join(c.dirs[1], "pids.max"):              strconv.Itoa(l.Pids),
			filepath.Join(c.dirs[2], "cpu.shares"):            strconv.Itoa(1024 * l.CPUWeight / 100),
		}
	}
	for f, v := range files {
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil && !(errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(f, "swap.max")) {
			return fmt.Errorf("set %s: %w", f, err)
		}
	}
	return nil
}

// add moves pid (and so everything it starts from then on) into the cgroup.
func (c *cgroup) add(pid int) error {
	for _, d := range c.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("add process %d to cgroup %s: %w", pid, d, err)
		}
	}
	return nil
}

// procs returns the processes in the cgroup (any controller's), nil when it
// does not exist.
func (c *cgroup) procs() []int {
	var pids []int
	seen := map[int]bool{}
	for _, d := range c.dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// remove removes the cgroup's directories (they must hold no process); a
// missing one is fine.
func (c *cgroup) remove() error {
	var errs []error
	for _, d := range c.dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// oomKills returns the number of OOM kills in the cgroup (v2
// memory.events oom_kill; v1 memory.oom_control oom_kill).
func (c *cgroup) oomKills() int {
	f := "memory.oom_control"
	if c.version == 2 {
		f = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(c.dirs[0], f))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == "oom_kill" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// cgroupNames lists the machine cgroups ("mc-<hash>" hashes) below parent.
func cgroupNames(version int, parent string) []string {
	dir := filepath.Join(CgroupRoot, parent)
	if version == 1 {
		dir = filepath.Join(CgroupRoot, "memory", parent)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var hs []string
	for _, e := range ents {
		if h, ok := strings.CutPrefix(e.Name(), "mc-"); ok && e.IsDir() && len(h) == 8 {
			hs = append(hs, h)
		}
	}
	return hs
}
