package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/driver/local"
	"github.com/master-controller/mc/gateway"
	"github.com/master-controller/mc/netpool"
	"github.com/master-controller/mc/token"
	"github.com/master-controller/mc/vault"
	"github.com/master-controller/mc/web"
	"github.com/master-controller/mc/webhook"
)

// newDriver builds the configured runtime driver and checks its
// prerequisites: a driver that cannot run here says so in one line.
func newDriver(ctx context.Context, cfg Config, st mc.LeaseStore, log *slog.Logger) (mc.Driver, error) {
	var d mc.Driver
	switch cfg.Driver {
	case "fake":
		d = fake.New(fake.Config{MaxMachines: cfg.MaxMachines, StartDelay: cfg.FakeStartDelay})
	case "local":
		log.Info("host for machines", "summary", local.Summary(Doctor(cfg)))
		lcfg := localConfig(cfg)
		hooks, err := testHooks(cfg)
		if err != nil {
			return nil, err
		}
		lcfg.Test = hooks
		if lcfg.Test != nil {
			log.Warn("test hooks on: machines get a test hosts file, test binds or trust a test certificate; never in production")
		}
		ld, err := local.New(lcfg, st, log)
		if err != nil {
			return nil, fmt.Errorf("local driver: %w", err)
		}
		d = ld
	case "kubernetes":
		kd, err := kubernetes.New(ctx, k8sConfig(cfg), log)
		if err != nil {
			return nil, fmt.Errorf("kubernetes driver: %w", err)
		}
		d = kd
	default:
		return nil, fmt.Errorf("unknown driver %q", cfg.Driver)
	}
	if err := d.Check(ctx); err != nil {
		return nil, fmt.Errorf("%s driver cannot run on this host: %w", d.Name(), err)
	}
	caps := d.Capabilities()
	where := slog.String("network", caps.Network.String())
	if caps.SocketDir != "" {
		where = slog.String("socket_dir", caps.SocketDir)
	}
	log.Info("driver ready", "driver", d.Name(), "isolation", caps.Isolation, where, "max_machines", caps.MaxMachines)
	return d, nil
}

// Doctor examines the host for the local driver as cfg configures it, one
// finding per line of "master-controller doctor"; serve logs their summary
// at start.
func Doctor(cfg Config) []local.Finding { return local.Doctor(localConfig(cfg)) }

// NetworkDown removes the local driver's machine network as cfg configures
// it (MC_BRIDGE, MC_NETWORK): the bridge and its firewall and egress rules,
// which the controller leaves on the host when it stops. It refuses while
// machines are attached (reason bridge_in_use). It returns what it did, in
// one line.
func NetworkDown(ctx context.Context, cfg Config) (string, error) {
	lc := localConfig(cfg)
	pool, err := netpool.New(netpool.Config{Bridge: lc.Bridge, Network: lc.Network}, nil, nil)
	if err != nil {
		return "", err
	}
	had, err := pool.Down(ctx)
	switch {
	case err != nil:
		return "", err
	case !had:
		return fmt.Sprintf("no bridge %s; removed any firewall and egress rules left for it", lc.Bridge), nil
	}
	return fmt.Sprintf("removed bridge %s (%s) and its firewall and egress rules", lc.Bridge, lc.Network), nil
}

// localConfig is the local driver's configuration from cfg.
func localConfig(cfg Config) local.Config {
	mode := cfg.LocalMode
	if mode == "auto" {
		mode = ""
	}
	network, _ := netip.ParsePrefix(cfg.Network)
	tmp := int64(cfg.MachineTmpMB) << 20
	return local.Config{
		DataDir: cfg.DataDir, AgentPath: cfg.AgentPath, Mode: mode, Bridge: cfg.Bridge,
		Network: network, PortBase: cfg.PortBase, DisplayBase: cfg.DisplayBase, MaxMachines: cfg.MaxMachines,
		Geometry: cfg.Geometry, Egress: cfg.LocalEgress, CLIDir: cfg.CLIDir,
		Limits:  local.Limits{Memory: int64(cfg.MachineMemMB) << 20, Pids: cfg.MachinePids, CPUWeight: cfg.MachineCPU},
		TmpSize: tmp, HomeSize: tmp, ShmSize: tmp,
		UIDBase: cfg.MachineUIDBase, InsecureSharedHost: cfg.InsecureShared,
	}
}

// k8sConfig is the kubernetes driver's configuration from cfg (checked by
// Validate).
func k8sConfig(cfg Config) kubernetes.Config {
	network, _ := netip.ParsePrefix(cfg.K8sPodNetwork)
	cidrs, _ := cfg.K8sCIDRs()
	seccomp := cfg.K8sSeccompProfile
	if seccomp == "RuntimeDefault" {
		seccomp = ""
	}
	tmp := int64(cfg.MachineTmpMB) << 20
	return kubernetes.Config{
		Kubeconfig: cfg.K8sKubeconfig, Namespace: cfg.K8sNamespace, Image: cfg.K8sImage,
		ImagePullPolicy: corev1.PullPolicy(cfg.K8sImagePullPolicy), RuntimeClassName: cfg.K8sRuntimeClass,
		SeccompProfile: seccomp, Replica: cfg.Replica, MaxMachines: cfg.MaxMachines, Network: network,
		CPURequest: cfg.K8sCPURequest, CPULimit: cfg.K8sCPULimit,
		MemoryRequest: cfg.K8sMemoryRequest, MemoryLimit: strconv.Itoa(cfg.MachineMemMB) + "Mi",
		ShmSize: tmp, TmpSize: tmp, HomeSize: tmp, UnschedulableWait: cfg.K8sUnschedulableWait,
		Controller: kubernetes.Peers{Labels: cfg.K8sControllerLabels, Namespace: cfg.K8sControllerNS, CIDRs: cidrs},
	}
}

// testHooks are the machines' test-only settings (MC_TEST_MACHINE_HOSTS,
// MC_TEST_MACHINE_BINDS, MC_TEST_TRUST_SPKI), or nil when none is set.
func testHooks(cfg Config) (*local.MachineTestHooks, error) {
	if cfg.TestHostsFile == "" && cfg.TestTrustSPKI == "" && cfg.TestMachineBinds == "" {
		return nil, nil
	}
	h := &local.MachineTestHooks{TrustSPKI: cfg.TestTrustSPKI}
	if cfg.TestHostsFile != "" {
		b, err := os.ReadFile(cfg.TestHostsFile)
		if err != nil {
			return nil, fmt.Errorf("MC_TEST_MACHINE_HOSTS: %w", err)
		}
		h.Hosts = string(b)
	}
	for _, p := range strings.Split(cfg.TestMachineBinds, ",") {
		if p = strings.TrimSpace(p); p != "" {
			h.Binds = append(h.Binds, p)
		}
	}
	return h, nil
}

// newNotifier returns the webhook notifier, or nil when none is configured.
func newNotifier(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*webhook.Notifier, error) {
	if cfg.WebhookURL == "" {
		return nil, nil
	}
	return webhook.New(webhook.Config{URL: mc.SecretOf(cfg.WebhookURL), Secret: mc.SecretOf(cfg.WebhookSecret)},
		webhook.Options{Logger: log, Registerer: reg})
}

// newWeb serves the viewer page and the dashboard.
func newWeb(cfg Config) (http.Handler, error) {
	origins := cfg.Origins()
	ancestors := []string{"'self'"}
	ancestors = append(ancestors, origins...)
	if len(origins) == 0 {
		ancestors = nil // the package default: any site may embed the viewer
	}
	return web.New(web.Config{Dir: cfg.WebDir, FrameAncestors: ancestors})
}

// newGateway builds the viewer gateway and the viewer-token signer. The
// signing key is derived from the vault keys, so every replica verifies every
// token; tokens signed under an earlier primary key are still accepted.
func newGateway(cfg Config, st mc.Store, drv mc.Driver, kr *vault.Keyring, machineKey mc.MachineKey,
	log *slog.Logger, reg prometheus.Registerer) (*gateway.Gateway, *token.Signer, error) {
	keys := kr.DeriveAll(vault.PurposeViewerTokens)
	signer := token.NewSigner(keys[0], nil, keys[1:]...)
	caps := drv.Capabilities()
	gcfg := gateway.Config{
		PublicURL: cfg.PublicURL, AllowedOrigins: cfg.Origins(), ReadyTimeout: cfg.ReadyWait, PingInterval: cfg.PingInterval,
		MaxViewers: cfg.MaxViewers,
	}
	gcfg.SocketRoot = caps.SocketDir
	if caps.Network.Addr().IsLoopback() {
		gcfg.LoopbackPortLo, gcfg.LoopbackPortHi = caps.PortLo, caps.PortHi
	} else if caps.Network.IsValid() {
		gcfg.Networks = []netip.Prefix{caps.Network}
	}
	gw, err := gateway.New(gcfg, gateway.Deps{Store: st, Tokens: signer, Logger: log, Registry: reg, MachineKey: machineKey})
	if err != nil {
		return nil, nil, err
	}
	return gw, signer, nil
}

// cliChecker is a driver that can say whether a provider's CLI can run in
// its machines.
type cliChecker interface {
	CheckCLI(name string) error
}

// providerCheck returns the API's availability check of providers on drv,
// and logs, one line each, the providers whose CLI is missing.
func providerCheck(drv mc.Driver, all []mc.Provider, log *slog.Logger) func(mc.Provider) error {
	cc, ok := drv.(cliChecker)
	if !ok {
		return nil
	}
	for _, p := range all {
		if err := cc.CheckCLI(p.CLI()); err != nil {
			log.Warn("provider unavailable", "provider", p.Name, mc.LogReason, mc.ReasonProviderUnavailable, mc.LogError, err)
		}
	}
	return func(p mc.Provider) error { return cc.CheckCLI(p.CLI()) }
}
