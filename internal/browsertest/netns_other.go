//go:build !linux

package browsertest

import (
	"errors"
	"os/exec"
)

// isolation is Linux only; elsewhere the browser shares the host's network.
type isolation struct{}

func isolateCmd(*exec.Cmd) {}

func newIsolation(int) (*isolation, error) {
	return nil, errors.New("network namespaces need Linux")
}

func (*isolation) forward(string) error { return nil }

func (*isolation) close() {}
