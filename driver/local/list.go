package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	mc "github.com/master-controller/mc"
)

// List reports every machine with a directory under DataDir/machines,
// including ones an earlier controller process left, running or not.
// Machines are told apart by the id in their state file.
func (d *Driver) List(ctx context.Context) ([]mc.MachineStatus, error) {
	ents, err := os.ReadDir(d.machinesDir())
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	var out []mc.MachineStatus
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := readStateFile(filepath.Join(d.machinesDir(), e.Name(), stateFile))
		if err != nil || st == nil || !validID(st.ID) {
			// Directories are renamed into place with their state, so this
			// is damage, not a create in progress.
			d.log.Warn("list machines: directory without valid state", "dir", e.Name(), mc.LogError, err)
			continue
		}
		out = append(out, d.status(st))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, nil
}
