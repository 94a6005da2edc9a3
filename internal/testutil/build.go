package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The binaries Build made, in one directory per test binary.
var (
	builds   sync.Map // package path → *build
	dirOnce  sync.Once
	buildDir string
	dirErr   error
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Build builds the main package pkg (an import path of this module, such as
// "github.com/master-controller/mc/cmd/mc-agent") once per test binary,
// statically (CGO_ENABLED=0), and returns the binary's path. It is for
// TestMain, which has no testing.TB; RemoveBuilt removes what it made.
func Build(pkg string) (string, error) { return buildTags(pkg, "") }

// BuildTagged is BuildBinary with build tags (comma-separated), for test
// builds of a command; each (pkg, tags) is built once per test binary.
func BuildTagged(tb testing.TB, pkg, tags string) string {
	tb.Helper()
	p, err := buildTags(pkg, tags)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func buildTags(pkg, tags string) (string, error) {
	dirOnce.Do(func() { buildDir, dirErr = os.MkdirTemp("", "mc-test-bin-") })
	if dirErr != nil {
		return "", fmt.Errorf("go build %s: %w", pkg, dirErr)
	}
	v, _ := builds.LoadOrStore(pkg+" "+tags, &build{})
	b := v.(*build)
	b.once.Do(func() {
		out := filepath.Join(buildDir, path.Base(pkg))
		args := []string{"build", "-o", out}
		if tags != "" {
			out += "-" + strings.ReplaceAll(tags, ",", "-")
			args = []string{"build", "-tags", tags, "-o", out}
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v: %s", pkg, err, bytes.TrimSpace(msg))
			return
		}
		b.path = out
	})
	return b.path, b.err
}

// BuildBinary is Build for a test: it fails tb when the build fails.
func BuildBinary(tb testing.TB, pkg string) string {
	tb.Helper()
	p, err := Build(pkg)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// RemoveBuilt removes the binaries Build made; a TestMain calls it after
// m.Run.
func RemoveBuilt() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// ServerPackage is the import path of the master-controller command.
const ServerPackage = "github.com/master-controller/mc/cmd/master-controller"

// ServerBinary returns the master-controller binary: $MC_TEST_SERVER, or
// one built once for this test binary.
func ServerBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("MC_TEST_SERVER"); p != "" {
		return p
	}
	return BuildBinary(tb, ServerPackage)
}
