package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/netpool"
)

// state is a machine's machine.json: what a restarted controller needs to
// find, inspect and destroy the machine from the host alone. It holds no
// secret.
type state struct {
	ID        string `json:"id"`
	SessionID string `json:"session_id,omitempty"`
	// Pooled: the machine was created for the warm pool (MachineSpec.Pooled).
	Pooled    bool   `json:"pooled,omitempty"`
	Mode      string `json:"mode"`
	Pool      string `json:"pool"`
	Slot      int    `json:"slot"`
	Namespace string `json:"netns,omitempty"`
	Veth      string `json:"veth,omitempty"`
	// TmpDir is the machine's private temporary directory (Chromium's
	// TMPDIR), recorded so that Destroy removes it even after TmpDir changed.
	TmpDir string `json:"tmp_dir,omitempty"`
	// SocketDir is a userns machine's socket directory on the host.
	SocketDir string `json:"socket_dir,omitempty"`
	// UID is a confined machine's uid (and gid), leased in pool
	// "local/uid"; zero for an unconfined machine.
	UID int `json:"uid,omitempty"`
	// Cgroup is the cgroup version of a confined machine's cgroup (1 or
	// 2; zero when it has none).
	Cgroup int `json:"cgroup,omitempty"`
	// CgroupDirs are the directories of its cgroup (v1: memory, pids, cpu).
	CgroupDirs []string   `json:"cgroup_dirs,omitempty"`
	Machine    mc.Machine `json:"machine"`
	// PID is the agent's process id; it leads process group PGID. Zero until
	// the agent has started.
	PID  int `json:"pid,omitempty"`
	PGID int `json:"pgid,omitempty"`
	// StartTicks is the agent's start time (field 22 of /proc/<pid>/stat),
	// which tells the agent from a later process that reuses its pid.
	StartTicks uint64    `json:"start_ticks,omitempty"`
	Created    time.Time `json:"created"`
	Started    time.Time `json:"started,omitzero"`
}

const stateFile = "machine.json"

// errOtherMachine says that the directory of an id's hash belongs to
// another id (a 32-bit hash collision): that id must not touch it.
var errOtherMachine = errors.New("machine directory belongs to another machine")

// readState reads machine id's state; (nil, nil) when it has none.
func (d *Driver) readState(id string) (*state, error) {
	st, err := readStateFile(filepath.Join(d.MachineDir(id), stateFile))
	if err != nil || st == nil {
		return nil, err
	}
	if st.ID != id {
		return nil, fmt.Errorf("read state of machine %s: %w (%s)", id, errOtherMachine, st.ID)
	}
	return st, nil
}

// readStateFile reads one machine.json; (nil, nil) when there is none.
func readStateFile(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	return &st, nil
}

// newMachineDir creates machine id's directory with its home (both 0700)
// and first state: built under a temporary name and renamed into place, so
// that a machine directory always has a state file and List can name its
// machine.
func (d *Driver) newMachineDir(st *state) error {
	tmp, err := os.MkdirTemp(d.machinesDir(), newPrefix+netpool.Hash(st.ID)+"-")
	if err != nil {
		return fmt.Errorf("create directory of machine %s: %w", st.ID, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename
	if err := os.Mkdir(filepath.Join(tmp, "home"), 0o700); err != nil {
		return fmt.Errorf("create home of machine %s: %w", st.ID, err)
	}
	if err := writeStateIn(tmp, st); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.MachineDir(st.ID)); err != nil {
		return fmt.Errorf("create directory of machine %s: %w", st.ID, err)
	}
	return nil
}

// newPrefix starts the names of machine directories being built.
const newPrefix = ".new-"

// removeStaleNew removes directories that a Create began and never renamed
// (the controller died in between), once they are a minute old.
func (d *Driver) removeStaleNew() {
	ents, err := os.ReadDir(d.machinesDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), newPrefix) && time.Since(info.ModTime()) > time.Minute {
			_ = os.RemoveAll(filepath.Join(d.machinesDir(), e.Name()))
		}
	}
}

// writeState replaces machine.json atomically (write, sync, rename).
func (d *Driver) writeState(st *state) error {
	return writeStateIn(d.MachineDir(st.ID), st)
}

func writeStateIn(dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	tmp, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write state of machine %s: %w", st.ID, err)
	}
	return nil
}
