package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/master-controller/mc/netpool"
	"github.com/master-controller/mc/netpool/netpooltest"
)

func runCmd(args []string, env map[string]string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestHelpListsEverySetting(t *testing.T) {
	code, out, _ := runCmd([]string{"serve", "--help"}, nil)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"MC_LISTEN", "MC_DATA_DIR", "MC_DATABASE_URL", "MC_API_KEYS", "MC_DRIVER",
		"MC_LOG_LEVEL", "MC_LOG_FORMAT", "127.0.0.1:8080", "./data", "--max-viewers"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"help", "migrate"}, {"websockify", "--help"},
		{"help", "vault", "rotate"}, {"help", "network", "down"}, {"network", "--help"}, {"network", "down", "--help"},
		{"help", "help"}, {"--help", "--help"}} {
		if code, out, errs := runCmd(args, nil); code != 0 || out+errs == "" {
			t.Errorf("%v: exit %d, output %q", args, code, out+errs)
		}
	}
}

func TestBadConfigIsOneLineEach(t *testing.T) {
	env := map[string]string{"MC_LOG_LEVEL": "loud", "MC_DRIVER": "docker", "MC_IDLE_TIMEOUT": "soon",
		"MC_DATABASE_URL": "mysql://x", "MC_API_KEYS": "x"}
	code, _, errs := runCmd([]string{"serve"}, env)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	for _, want := range []string{"MC_LOG_LEVEL", "MC_DRIVER", "MC_IDLE_TIMEOUT", "MC_DATABASE_URL"} {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, "config: "+want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines about %s, want 1:\n%s", n, want, errs)
		}
	}
	if strings.Contains(errs, "mysql://x") {
		t.Error("the database URL (it may hold a password) was echoed")
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, errs := runCmd([]string{"launch"}, nil); code != 2 || !strings.Contains(errs, `unknown command "launch"`) {
		t.Errorf("exit %d, %q", code, errs)
	}
	if code, out, _ := runCmd([]string{"version"}, nil); code != 0 || !strings.HasPrefix(out, "master-controller ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestNoTestCodeInBinary checks that the binary links no test code: neither
// the testing package nor a package that imports it (the fake driver and its
// RFB fakes ship in the binary, for MC_DRIVER=fake, and must stay free of it).
func TestNoTestCodeInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed %d packages, want the whole graph: %q", len(deps), out)
	}
	for _, p := range deps {
		if p == "testing" || strings.HasPrefix(p, "testing/") {
			t.Errorf("master-controller links %s", p)
		}
	}
}

// TestNetworkDown: "network down" removes the bridge that MC_BRIDGE names
// (and its rules; netpool's TestDown checks those), then finds nothing.
func TestNetworkDown(t *testing.T) {
	netpooltest.Root(t)
	cfg := netpooltest.Config(t)
	p, err := netpool.New(cfg, &netpooltest.Leases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MC_BRIDGE": cfg.Bridge, "MC_NETWORK": cfg.Network.String(), "MC_DATA_DIR": t.TempDir()}
	if code, out, errs := runCmd([]string{"network", "down"}, env); code != 0 || !strings.HasPrefix(out, "removed bridge "+cfg.Bridge) {
		t.Errorf("network down: exit %d, %q %q", code, out, errs)
	}
	if _, err := os.Stat("/sys/class/net/" + cfg.Bridge); err == nil {
		t.Errorf("bridge %s is still there", cfg.Bridge)
	}
	if code, out, errs := runCmd([]string{"network", "down"}, env); code != 0 || !strings.HasPrefix(out, "no bridge "+cfg.Bridge) {
		t.Errorf("network down again: exit %d, %q %q", code, out, errs)
	}
}
