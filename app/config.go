// Package app is the composition root: it turns a Config into a running
// controller (store, driver, manager, gateway, API) and shuts it down in
// order. cmd/master-controller only parses the command line and handles
// signals; end-to-end tests run Main in-process.
package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/master-controller/mc/driver/local"
)

// Config is every setting of the controller. Each has a flag and an MC_*
// environment variable; a flag given on the command line wins over the
// environment, which wins over the default.
type Config struct {
	Listen      string
	PublicURL   string
	DataDir     string
	DatabaseURL string
	Replica     string
	APIKeys     string
	APIKeysFile string
	LogLevel    string
	LogFormat   string

	Driver         string
	FakeStartDelay time.Duration
	LocalMode      string
	Bridge         string
	Network        string
	LocalEgress    bool
	PortBase       int
	DisplayBase    int
	AgentPath      string
	CLIDir         string
	// TestHostsFile and TestTrustSPKI are for tests only (a stand-in
	// provider): see local.MachineTestHooks.
	TestHostsFile string
	TestTrustSPKI string
	// TestMachineBinds (tests only) are host paths, comma-separated, that
	// machines see read-only (a stand-in provider's CA).
	TestMachineBinds string
	MaxMachines      int
	// The kubernetes driver's settings (MC_K8S_*).
	K8sKubeconfig        string
	K8sNamespace         string
	K8sImage             string
	K8sImagePullPolicy   string
	K8sRuntimeClass      string
	K8sSeccompProfile    string
	K8sCPURequest        string
	K8sCPULimit          string
	K8sMemoryRequest     string
	K8sUnschedulableWait time.Duration
	K8sPodNetwork        string
	K8sControllerLabels  string
	K8sControllerNS      string
	K8sControllerCIDRs   string
	MachineMemMB         int
	MachinePids          int
	MachineCPU           int
	MachineTmpMB         int
	MachineUIDBase       int
	InsecureShared       bool
	Geometry             string
	StartTimeout         time.Duration
	IdleTimeout          time.Duration
	MaxLifetime          time.Duration
	DestroyGrace         time.Duration
	ReconcileEvery       time.Duration
	Pool                 string
	PoolMaxAge           time.Duration
	Heartbeat            time.Duration
	ReplicaTimeout       time.Duration

	AllowedOrigins string
	ViewerTokenTTL time.Duration
	ReadyWait      time.Duration
	PingInterval   time.Duration
	MaxViewers     int
	WebDir         string

	VaultKeys     string
	VaultKeyFile  string
	ProvidersFile string
	WebhookURL    string
	WebhookSecret string

	ShutdownTimeout time.Duration

	MaxConnections       int
	MaxViewerConnections int
	HTTPHeaderTimeout    time.Duration
	HTTPBodyTimeout      time.Duration
	HTTPIdleTimeout      time.Duration
	MetricsListen        string
}

// setting describes one configuration field for flags, env and help.
type setting struct {
	flag, env, help string
	ptr             any
	def             string
	secret          bool
}

// settings lists every setting once; flags, env and --help derive from it.
func (c *Config) settings() []setting {
	return []setting{
		{"listen", "MC_LISTEN", "address to serve HTTP on (host:port; port 0 picks one)", &c.Listen, "127.0.0.1:8080", false},
		{"public-url", "MC_PUBLIC_URL", "external base URL used in viewer links (default: http://<listen>)", &c.PublicURL, "", false},
		{"data-dir", "MC_DATA_DIR", "directory for the SQLite database, generated keys and machine files", &c.DataDir, "./data", false},
		{"database-url", "MC_DATABASE_URL", "SQLite file path, or a postgres:// URL for several replicas (default: <data-dir>/mc.db)", &c.DatabaseURL, "", true},
		{"replica", "MC_REPLICA", "name of this replica; must be stable across restarts and unique among replicas (default: the host name)", &c.Replica, "", false},
		{"api-keys", "MC_API_KEYS", "comma-separated API keys for backends, 16 characters or more (default: one generated into <data-dir>/api-keys, and again if that file holds none)", &c.APIKeys, "", true},
		{"api-keys-file", "MC_API_KEYS_FILE", "file with one API key per line; a file with no key stops the start", &c.APIKeysFile, "", false},
		{"log-level", "MC_LOG_LEVEL", "debug, info, warn or error", &c.LogLevel, "info", false},
		{"log-format", "MC_LOG_FORMAT", "text or json", &c.LogFormat, "text", false},

		{"driver", "MC_DRIVER", "machine runtime: local, kubernetes (a Pod per machine; the MC_K8S_* settings), or fake (in-process stand-in machines, for tests and demos)", &c.Driver, "local", false},
		{"fake-start-delay", "MC_FAKE_START_DELAY", "with --driver fake: how long each fake machine takes to start", &c.FakeStartDelay, "0s", false},
		{"local-mode", "MC_LOCAL_MODE", "local driver isolation: auto (netns as root, userns without root), netns, userns or loopback", &c.LocalMode, "auto", false},
		{"bridge", "MC_BRIDGE", "bridge for machine namespaces", &c.Bridge, "mcbr0", false},
		{"network", "MC_NETWORK", "machine network (the bridge holds .1)", &c.Network, "10.200.0.0/24", false},
		{"local-egress", "MC_LOCAL_EGRESS", "let machines reach the internet (forwarding and NAT; never the host or private ranges); needed for real logins", &c.LocalEgress, "false", false},
		{"port-base", "MC_PORT_BASE", "first loopback port in loopback mode (4 per machine)", &c.PortBase, "21000", false},
		{"display-base", "MC_DISPLAY_BASE", "X display number of the first machine (displays are host-wide: give each controller on a host its own range)", &c.DisplayBase, "100", false},
		{"agent-path", "MC_AGENT_PATH", "path of the mc-agent binary (default: beside this binary, else on PATH)", &c.AgentPath, "", false},
		{"cli-dir", "MC_CLI_DIR", "directory of the provider CLIs claude, codex and gemini (scripts/deps.sh installs the pinned ones there)", &c.CLIDir, local.DefaultCLIDir, false},
		{"test-machine-hosts", "MC_TEST_MACHINE_HOSTS", "tests only: each machine's /etc/hosts, to reach a stand-in provider", &c.TestHostsFile, "", false},
		{"test-trust-spki", "MC_TEST_TRUST_SPKI", "tests only: base64 SHA-256 of a stand-in provider's certificate key that machines' Chromium accepts", &c.TestTrustSPKI, "", false},
		{"test-machine-binds", "MC_TEST_MACHINE_BINDS", "tests only: comma-separated host paths machines see read-only (a stand-in provider's CA)", &c.TestMachineBinds, "", false},
		{"max-machines", "MC_MAX_MACHINES", "maximum concurrent machines (default: from memory, about 500 MB each); with the kubernetes driver, every replica's machines in the namespace together (default 50)", &c.MaxMachines, "0", false},
		{"k8s-kubeconfig", "MC_K8S_KUBECONFIG", "kubernetes driver: kubeconfig file of the cluster (default: in-cluster, the Pod's service account)", &c.K8sKubeconfig, "", false},
		{"k8s-namespace", "MC_K8S_NAMESPACE", "kubernetes driver: namespace of the machines' Pods, Secrets and NetworkPolicy", &c.K8sNamespace, "mc-machines", false},
		{"k8s-image", "MC_K8S_IMAGE", "kubernetes driver: the machine image (scripts/image/build.sh prints its reference); required", &c.K8sImage, "", false},
		{"k8s-image-pull-policy", "MC_K8S_IMAGE_PULL_POLICY", "kubernetes driver: Always, IfNotPresent, or Never (an image imported into each node)", &c.K8sImagePullPolicy, "IfNotPresent", false},
		{"k8s-runtime-class", "MC_K8S_RUNTIME_CLASS", "kubernetes driver: runtimeClassName of machine Pods (gVisor, Kata); default: the cluster's", &c.K8sRuntimeClass, "", false},
		{"k8s-seccomp-profile", "MC_K8S_SECCOMP_PROFILE", "kubernetes driver: seccomp of machine Pods: a Localhost profile path below the kubelet's seccomp directory, or RuntimeDefault where it lets Chromium's sandbox make a user namespace (containerd 1.6's does not); install deploy/kubernetes/seccomp/mc-chromium.json on every node", &c.K8sSeccompProfile, "mc-chromium.json", false},
		{"k8s-cpu-request", "MC_K8S_CPU_REQUEST", "kubernetes driver: CPU request of each machine (- for none)", &c.K8sCPURequest, "250m", false},
		{"k8s-cpu-limit", "MC_K8S_CPU_LIMIT", "kubernetes driver: CPU limit of each machine (- for none)", &c.K8sCPULimit, "1", false},
		{"k8s-memory-request", "MC_K8S_MEMORY_REQUEST", "kubernetes driver: memory request of each machine (its limit is MC_MACHINE_MEMORY_MB)", &c.K8sMemoryRequest, "512Mi", false},
		{"k8s-unschedulable-wait", "MC_K8S_UNSCHEDULABLE_WAIT", "kubernetes driver: fail a machine whose Pod no node can take for this long (reason unschedulable)", &c.K8sUnschedulableWait, "30s", false},
		{"k8s-pod-network", "MC_K8S_POD_NETWORK", "kubernetes driver: the cluster's pod network (CIDR), the only addresses the gateway dials; required", &c.K8sPodNetwork, "", false},
		{"k8s-controller-labels", "MC_K8S_CONTROLLER_LABELS", "kubernetes driver: labels of the controller's Pods, whom the machines' NetworkPolicy admits (- for none: a controller outside the cluster)", &c.K8sControllerLabels, "app.kubernetes.io/name=master-controller", false},
		{"k8s-controller-namespace", "MC_K8S_CONTROLLER_NAMESPACE", "kubernetes driver: namespace of the controller's Pods (default: the namespace this replica runs in, else master-controller)", &c.K8sControllerNS, "", false},
		{"k8s-controller-cidrs", "MC_K8S_CONTROLLER_CIDRS", "kubernetes driver: comma-separated networks of controllers outside the cluster that the NetworkPolicy admits", &c.K8sControllerCIDRs, "", false},
		{"machine-memory-mb", "MC_MACHINE_MEMORY_MB", "memory limit of each machine in MiB (its cgroup; its /tmp, /home and /dev/shm count against it)", &c.MachineMemMB, "1024", false},
		{"machine-pids", "MC_MACHINE_PIDS", "most processes and threads in each machine", &c.MachinePids, "512", false},
		{"machine-cpu-weight", "MC_MACHINE_CPU_WEIGHT", "CPU share of each machine relative to others (100: equal)", &c.MachineCPU, "100", false},
		{"machine-tmp-mb", "MC_MACHINE_TMP_MB", "size of each machine's /tmp, /home and /dev/shm in MiB, each", &c.MachineTmpMB, "256", false},
		{"machine-uid-base", "MC_MACHINE_UID_BASE", "first uid of machines; each runs as a uid of its own above it", &c.MachineUIDBase, "1000000", false},
		{"insecure-shared-host", "MC_INSECURE_SHARED_HOST", "without root, run machines unconfined as this user (any page can read this user's files; development only)", &c.InsecureShared, "false", false},
		{"geometry", "MC_GEOMETRY", "machine screen size WxH", &c.Geometry, "1280x800", false},
		{"start-timeout", "MC_START_TIMEOUT", "bound on machine start and readiness", &c.StartTimeout, "90s", false},
		{"idle-timeout", "MC_IDLE_TIMEOUT", "end a session with no viewer and no activity after this long", &c.IdleTimeout, "10m", false},
		{"max-lifetime", "MC_MAX_LIFETIME", "end any session this long after it was created", &c.MaxLifetime, "30m", false},
		{"destroy-grace", "MC_DESTROY_GRACE", "keep a completed session's machine this long before destroying it", &c.DestroyGrace, "3s", false},
		{"reconcile-interval", "MC_RECONCILE_INTERVAL", "period of the reconcile pass (also run at start-up)", &c.ReconcileEvery, "1m", false},
		{"pool", "MC_POOL", "warm pool: pre-started machines per provider, like demo=2,claude_code=4 (default: demo=1 with the local driver, else none; a provider's \"pool\" in the providers file sets it too; this wins)", &c.Pool, "", false},
		{"pool-max-age", "MC_POOL_MAX_AGE", "recycle a pooled machine this old", &c.PoolMaxAge, "30m", false},
		{"heartbeat-interval", "MC_HEARTBEAT_INTERVAL", "period of this replica's heartbeat in the store and, with a cluster driver, of its look for sessions to adopt from replicas that stopped", &c.Heartbeat, "2s", false},
		{"replica-timeout", "MC_REPLICA_TIMEOUT", "with a cluster driver, adopt the live sessions of a replica whose last heartbeat is this old (default: 3 heartbeat intervals)", &c.ReplicaTimeout, "0s", false},

		{"allowed-origins", "MC_ALLOWED_ORIGINS", "comma-separated Origins allowed on the viewer WebSocket besides MC_PUBLIC_URL's (host or scheme://host, * wildcards)", &c.AllowedOrigins, "", false},
		{"viewer-token-ttl", "MC_VIEWER_TOKEN_TTL", "lifetime of viewer tokens", &c.ViewerTokenTTL, "10m", false},
		{"ready-wait", "MC_READY_WAIT", "how long a viewer WebSocket waits for its machine to become ready", &c.ReadyWait, "90s", false},
		{"ping-interval", "MC_PING_INTERVAL", "WebSocket ping period", &c.PingInterval, "20s", false},
		{"max-viewers", "MC_MAX_VIEWERS", "viewers per session; 1 means a new viewer takes over (4409 to the old one)", &c.MaxViewers, "1", false},
		{"web-dir", "MC_WEB_DIR", "directory of the viewer and dashboard pages (with node_modules from npm ci)", &c.WebDir, "web", false},

		{"vault-keys", "MC_VAULT_KEYS", "vault keys id:base64,... (first seals new records; default: one generated into <data-dir>/vault.keys)", &c.VaultKeys, "", true},
		{"vault-key-file", "MC_VAULT_KEY_FILE", "file of vault keys, one id:base64 per line", &c.VaultKeyFile, "", false},
		{"providers-file", "MC_PROVIDERS_FILE", "JSON file that overrides or adds login providers", &c.ProvidersFile, "", false},
		{"webhook-url", "MC_WEBHOOK_URL", "URL that receives a signed event when a session ends", &c.WebhookURL, "", false},
		{"webhook-secret", "MC_WEBHOOK_SECRET", "HMAC-SHA256 key for webhook signatures", &c.WebhookSecret, "", true},

		{"shutdown-timeout", "MC_SHUTDOWN_TIMEOUT", "bound on a graceful stop (requests in flight, machines)", &c.ShutdownTimeout, "20s", false},

		{"max-connections", "MC_MAX_CONNECTIONS", "cap on open HTTP connections (a viewer's leaves it once a WebSocket); at it the longest idle one is closed, and with none idle a new one gets 503 too_many_connections (default: from the open-file limit, raised to its hard limit at start)", &c.MaxConnections, "0", false},
		{"max-viewer-connections", "MC_MAX_VIEWER_CONNECTIONS", "cap on open viewer WebSockets (each also holds its machine's stream); past it 503 too_many_viewers (default: from the open-file limit)", &c.MaxViewerConnections, "0", false},
		{"http-header-timeout", "MC_HTTP_HEADER_TIMEOUT", "bound on reading a request's header", &c.HTTPHeaderTimeout, "10s", false},
		{"http-body-timeout", "MC_HTTP_BODY_TIMEOUT", "bound on reading a request's body; past it 400 body_timeout", &c.HTTPBodyTimeout, "30s", false},
		{"http-idle-timeout", "MC_HTTP_IDLE_TIMEOUT", "close a keep-alive connection idle this long", &c.HTTPIdleTimeout, "2m", false},
		{"metrics-listen", "MC_METRICS_LISTEN", "serve GET /metrics without an API key on this address only (host:port, for a trusted network); unset, /metrics is on the main address and needs the API key", &c.MetricsListen, "", false},
	}
}

// DefaultConfig returns the defaults, before environment and flags.
func DefaultConfig() Config {
	var c Config
	for _, s := range c.settings() {
		if err := setValue(s.ptr, s.def); err != nil {
			panic(fmt.Sprintf("default of %s: %v", s.flag, err))
		}
	}
	return c
}

func setValue(ptr any, v string) error {
	switch p := ptr.(type) {
	case *string:
		*p = v
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (like 90s or 10m)", v)
		}
		*p = d
	default:
		return fmt.Errorf("unsupported setting type %s", reflect.TypeOf(ptr))
	}
	return nil
}

// Flags resets c to the defaults, applies the environment (getenv), and
// registers every setting on fs, so that flags parsed later win. It returns
// one line per environment variable that could not be used.
func (c *Config) Flags(fs *flag.FlagSet, getenv func(string) string) []string {
	*c = DefaultConfig()
	var problems []string
	for _, s := range c.settings() {
		if v := getenv(s.env); v != "" {
			if err := setValue(s.ptr, v); err != nil {
				if s.secret {
					err = errors.New("the value is not valid (not shown: it may be a secret)")
				}
				problems = append(problems, fmt.Sprintf("%s: %v", s.env, err))
			}
		}
		fs.Var(&flagValue{s.ptr}, s.flag, s.help)
	}
	return problems
}

// flagValue adapts a setting's pointer to flag.Value.
type flagValue struct{ ptr any }

func (f *flagValue) String() string {
	if f == nil || f.ptr == nil {
		return ""
	}
	return fmt.Sprint(reflect.ValueOf(f.ptr).Elem().Interface())
}

func (f *flagValue) Set(v string) error { return setValue(f.ptr, v) }

func (f *flagValue) IsBoolFlag() bool { _, ok := f.ptr.(*bool); return ok }

// PrintSettings writes every setting with its flag, variable and default.
func (c *Config) PrintSettings(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FLAG\tENVIRONMENT\tDEFAULT\tMEANING")
	for _, s := range c.settings() {
		def := s.def
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  --%s\t%s\t%s\t%s\n", s.flag, s.env, def, s.help)
	}
	tw.Flush()
}

// Validate fills derived defaults and returns one line per problem.
func (c *Config) Validate() []string {
	var p []string
	bad := func(env, format string, args ...any) { p = append(p, env+": "+fmt.Sprintf(format, args...)) }
	if _, port, err := splitHostPort(c.Listen); err != nil || port < 0 || port > 65535 {
		bad("MC_LISTEN", "%q is not host:port", c.Listen)
	}
	if c.DataDir == "" {
		bad("MC_DATA_DIR", "must not be empty")
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = filepath.Join(c.DataDir, "mc.db")
	}
	if strings.Contains(c.DatabaseURL, "://") && !c.Postgres() {
		bad("MC_DATABASE_URL", "must be a SQLite file path or a postgres:// URL")
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Listen
	} else if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("MC_PUBLIC_URL", "%q is not an http(s) URL", c.PublicURL)
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.Replica == "" {
		h, _ := os.Hostname()
		c.Replica = h
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("MC_LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("MC_LOG_FORMAT", "%q is not text or json", c.LogFormat)
	}
	switch c.Driver {
	case "local", "fake":
	case "kubernetes":
		p = append(p, c.validateK8s()...)
	default:
		bad("MC_DRIVER", "%q is not a driver here (local, kubernetes, fake)", c.Driver)
	}
	switch c.LocalMode {
	case "auto", "netns", "userns", "loopback":
	default:
		bad("MC_LOCAL_MODE", "%q is not auto, netns, userns or loopback", c.LocalMode)
	}
	if pfx, err := netip.ParsePrefix(c.Network); err != nil || !pfx.Addr().Is4() || pfx.Bits() > 29 {
		bad("MC_NETWORK", "%q is not an IPv4 network of at least 8 addresses", c.Network)
	}
	if c.PortBase < 1024 || c.PortBase > 65000 {
		bad("MC_PORT_BASE", "%d is outside 1024–65000", c.PortBase)
	}
	if c.DisplayBase < 1 || c.DisplayBase > 60000 {
		bad("MC_DISPLAY_BASE", "%d is outside 1–60000", c.DisplayBase)
	}
	if c.MaxMachines < 0 {
		bad("MC_MAX_MACHINES", "must not be negative")
	}
	if c.MachineMemMB < 64 {
		bad("MC_MACHINE_MEMORY_MB", "%d is less than 64", c.MachineMemMB)
	}
	if c.MachinePids < 32 {
		bad("MC_MACHINE_PIDS", "%d is less than 32", c.MachinePids)
	}
	if c.MachineCPU < 1 || c.MachineCPU > 10000 {
		bad("MC_MACHINE_CPU_WEIGHT", "%d is outside 1–10000", c.MachineCPU)
	}
	if c.MachineTmpMB < 16 {
		bad("MC_MACHINE_TMP_MB", "%d is less than 16", c.MachineTmpMB)
	}
	if c.MachineUIDBase < 1000 || c.MachineUIDBase > 2000000000 {
		bad("MC_MACHINE_UID_BASE", "%d is outside 1000–2000000000", c.MachineUIDBase)
	}
	if _, _, err := c.ScreenSize(); err != nil {
		bad("MC_GEOMETRY", "%v", err)
	}
	for _, d := range []struct {
		env string
		v   time.Duration
	}{{"MC_START_TIMEOUT", c.StartTimeout}, {"MC_IDLE_TIMEOUT", c.IdleTimeout}, {"MC_MAX_LIFETIME", c.MaxLifetime},
		{"MC_RECONCILE_INTERVAL", c.ReconcileEvery}, {"MC_VIEWER_TOKEN_TTL", c.ViewerTokenTTL},
		{"MC_READY_WAIT", c.ReadyWait}, {"MC_PING_INTERVAL", c.PingInterval}, {"MC_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"MC_HTTP_HEADER_TIMEOUT", c.HTTPHeaderTimeout}, {"MC_HTTP_BODY_TIMEOUT", c.HTTPBodyTimeout},
		{"MC_HTTP_IDLE_TIMEOUT", c.HTTPIdleTimeout}, {"MC_POOL_MAX_AGE", c.PoolMaxAge}, {"MC_HEARTBEAT_INTERVAL", c.Heartbeat}} {
		if d.v <= 0 {
			bad(d.env, "must be positive")
		}
	}
	if c.DestroyGrace < 0 {
		bad("MC_DESTROY_GRACE", "must not be negative")
	}
	if c.ReplicaTimeout != 0 && c.ReplicaTimeout < 2*c.Heartbeat {
		bad("MC_REPLICA_TIMEOUT", "%s is less than two heartbeat intervals (%s): a replica would be taken for dead between two heartbeats", c.ReplicaTimeout, 2*c.Heartbeat)
	}
	if c.MaxConnections < 0 {
		bad("MC_MAX_CONNECTIONS", "must not be negative")
	}
	if c.MaxViewerConnections < 0 {
		bad("MC_MAX_VIEWER_CONNECTIONS", "must not be negative")
	}
	if c.MetricsListen != "" {
		if _, port, err := splitHostPort(c.MetricsListen); err != nil || port < 0 || port > 65535 {
			bad("MC_METRICS_LISTEN", "%q is not host:port", c.MetricsListen)
		}
	}
	if _, err := ParsePool(c.Pool); err != nil {
		bad("MC_POOL", "%v", err)
	}
	if c.MaxViewers < 1 {
		bad("MC_MAX_VIEWERS", "must be at least 1")
	}
	for _, o := range c.Origins() {
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			bad("MC_ALLOWED_ORIGINS", "%q is not an origin like https://app.example.com", o)
		}
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			bad("MC_WEBHOOK_URL", "%q is not an http(s) URL", c.WebhookURL)
		}
		if c.WebhookSecret == "" {
			bad("MC_WEBHOOK_SECRET", "is required with MC_WEBHOOK_URL")
		}
	}
	return p
}

// validateK8s checks the kubernetes driver's settings.
func (c *Config) validateK8s() []string {
	var p []string
	bad := func(env, format string, args ...any) { p = append(p, env+": "+fmt.Sprintf(format, args...)) }
	if c.K8sImage == "" {
		bad("MC_K8S_IMAGE", "is required with MC_DRIVER=kubernetes (scripts/image/build.sh prints it)")
	}
	if pfx, err := netip.ParsePrefix(c.K8sPodNetwork); err != nil {
		bad("MC_K8S_POD_NETWORK", "%q is not a network like 10.244.0.0/16 (required with MC_DRIVER=kubernetes)", c.K8sPodNetwork)
	} else if pfx.Bits() == 0 {
		bad("MC_K8S_POD_NETWORK", "%q would let the gateway dial anywhere", c.K8sPodNetwork)
	}
	switch c.K8sImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		bad("MC_K8S_IMAGE_PULL_POLICY", "%q is not Always, IfNotPresent or Never", c.K8sImagePullPolicy)
	}
	if c.K8sUnschedulableWait <= 0 {
		bad("MC_K8S_UNSCHEDULABLE_WAIT", "must be positive")
	}
	if _, err := c.K8sCIDRs(); err != nil {
		bad("MC_K8S_CONTROLLER_CIDRS", "%v", err)
	}
	return p
}

// K8sCIDRs parses MC_K8S_CONTROLLER_CIDRS.
func (c *Config) K8sCIDRs() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(c.K8sControllerCIDRs, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network like 10.0.0.0/8", item)
		}
		out = append(out, pfx)
	}
	return out, nil
}

// ParsePool parses "provider=N,…" (N ≥ 0; "" is none).
func ParsePool(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, num, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(strings.TrimSpace(num))
		name = strings.TrimSpace(name)
		if !ok || name == "" || err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("%q is not provider=N (N from 0 to 1000)", item)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("provider %q is listed twice", name)
		}
		out[name] = n
	}
	return out, nil
}

// PoolTargets returns the pool size of each provider: the default (demo=1
// with the local driver), then the providers file's settings, then
// MC_POOL's, each overriding the one before.
func (c *Config) PoolTargets(fromFile map[string]int) map[string]int {
	out := map[string]int{}
	if c.Driver == "local" {
		out["demo"] = 1
	}
	for k, v := range fromFile {
		out[k] = v
	}
	set, _ := ParsePool(c.Pool)
	for k, v := range set {
		out[k] = v
	}
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// Postgres reports whether the database is PostgreSQL.
func (c *Config) Postgres() bool {
	return strings.HasPrefix(c.DatabaseURL, "postgres://") || strings.HasPrefix(c.DatabaseURL, "postgresql://")
}

// Origins returns the allowed origins.
func (c *Config) Origins() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimRight(o, "/"))
		}
	}
	return out
}

// ScreenSize parses Geometry.
func (c *Config) ScreenSize() (w, h int, err error) {
	ws, hs, ok := strings.Cut(c.Geometry, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w < 320 || h < 200 || w > 7680 || h > 4320 {
		return 0, 0, errors.New("geometry must be WxH, like 1280x800")
	}
	return w, h, nil
}

func splitHostPort(hp string) (string, int, error) {
	i := strings.LastIndex(hp, ":")
	if i < 0 {
		return "", 0, errors.New("no port")
	}
	port, err := strconv.Atoi(hp[i+1:])
	return hp[:i], port, err
}
