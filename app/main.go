package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
	"github.com/master-controller/mc/internal/atomicfile"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/provider"
	"github.com/master-controller/mc/session"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/vault"
)

// Main is one running controller. Tests build it in-process with New.
type Main struct {
	Config   Config
	Log      *slog.Logger
	Store    mc.Store
	Driver   mc.Driver
	Manager  *session.Manager
	Vault    *vault.Service
	API      *httpapi.Server
	Registry *prometheus.Registry

	// URL is the base URL the server listens on (with the real port).
	URL string
	// MachineKey derives the machines' VNC passwords and agent tokens (from
	// the vault keys); tests use it to reach a machine directly.
	MachineKey mc.MachineKey
	// MetricsURL is the base URL of the metrics listener (MetricsListen),
	// when there is one.
	MetricsURL string
	// GeneratedAPIKey is set when no key was configured and one was made
	// on this start (it is printed once).
	GeneratedAPIKey mc.Secret

	listener net.Listener
	server   *http.Server
	// metricsListener and metricsServer serve /metrics alone without an
	// API key, when MetricsListen is set.
	metricsListener net.Listener
	metricsServer   *http.Server
	closers         []closer
	out             io.Writer
}

// closer is one named step of shutdown; they run in reverse order of creation.
type closer struct {
	name string
	fn   func(ctx context.Context) error
}

func (m *Main) onClose(name string, fn func(ctx context.Context) error) {
	m.closers = append(m.closers, closer{name, fn})
}

// OpenStore opens the configured store and applies migrations.
func OpenStore(ctx context.Context, cfg Config, log *slog.Logger) (mc.Store, error) {
	if cfg.Postgres() {
		st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.Options{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, nil
	}
	if err := os.MkdirAll(filepath.Dir(cfg.DatabaseURL), 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st, err := sqlite.Open(ctx, cfg.DatabaseURL, sqlite.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.DatabaseURL, err)
	}
	return st, nil
}

// Migrate applies the embedded migrations and exits.
func Migrate(ctx context.Context, cfg Config, log *slog.Logger) error {
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	return st.Close()
}

// RotateVault re-seals every credential under the newest key.
func RotateVault(ctx context.Context, cfg Config, log *slog.Logger) (int, error) {
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	kr, _, err := vault.Load(ctx, vaultConfig(cfg), st)
	if err != nil {
		return 0, err
	}
	return vault.NewService(vault.New(kr), st, vault.Options{Logger: log}).Rotate(ctx)
}

func vaultConfig(cfg Config) vault.Config {
	return vault.Config{Keys: mc.SecretOf(cfg.VaultKeys), KeyFile: cfg.VaultKeyFile, DataDir: cfg.DataDir}
}

// New builds a controller from cfg (which must have passed Validate) and
// starts listening; Run serves. On error, whatever was opened is closed.
func New(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) (_ *Main, err error) {
	m := &Main{Config: cfg, Log: log.With(mc.LogReplica, cfg.Replica), out: out, Registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}

	st, err := OpenStore(ctx, cfg, m.Log)
	if err != nil {
		return nil, err
	}
	m.Store = st
	m.onClose("store", func(context.Context) error { return st.Close() })

	providers, err := provider.Load(cfg.ProvidersFile)
	if err != nil {
		return nil, err
	}

	// The keys are checked against the sealed records: a server that could
	// not open them refuses to start, naming the key ids they need.
	kr, created, err := vault.Load(ctx, vaultConfig(cfg), st)
	if err != nil {
		return nil, fmt.Errorf("vault keys: %w", err)
	}
	if created {
		m.Log.Warn("generated a vault key; back it up, credentials cannot be opened without it",
			"file", filepath.Join(cfg.DataDir, vault.KeyFileName), "key_id", kr.Primary())
	}
	if cfg.Postgres() && cfg.VaultKeys == "" && cfg.VaultKeyFile == "" {
		m.Log.Warn("the vault keys are in this replica's data directory; every replica on this database needs the same keys "+
			"(MC_VAULT_KEYS): credentials, viewer tokens and machine secrets depend on them",
			"file", filepath.Join(cfg.DataDir, vault.KeyFileName), "key_id", kr.Primary(), mc.LogReason, mc.ReasonVaultKeysLocal)
	}
	m.Vault = vault.NewService(vault.New(kr), st, vault.Options{Logger: m.Log, Registerer: m.Registry})

	keys, err := m.apiKeys()
	if err != nil {
		return nil, err
	}

	drv, err := newDriver(ctx, cfg, st, m.Log)
	if err != nil {
		return nil, err
	}
	m.Driver = drv
	if c, ok := drv.(interface{ Close() error }); ok { // the kubernetes driver's watch
		m.onClose("driver", func(context.Context) error { return c.Close() })
	}

	notifier, err := newNotifier(cfg, m.Log, m.Registry)
	if err != nil {
		return nil, err
	}
	if notifier != nil {
		m.onClose("webhooks", notifier.Close)
	}

	// The machines' secrets and the viewer-token signing key are derived
	// from the vault keys: every replica with the same keys derives the
	// same ones, and the store holds none of them.
	machineKey := mc.NewMachineKey(kr.Derive(vault.PurposeMachineSecrets))
	m.MachineKey = machineKey
	w, h, _ := cfg.ScreenSize()
	pool := cfg.PoolTargets(providers.Pools())
	for name := range pool {
		if _, ok := providers.Get(name); !ok {
			return nil, fmt.Errorf("MC_POOL: no provider %q", name)
		}
	}
	m.Manager = session.New(session.Config{
		Replica: cfg.Replica, StartTimeout: cfg.StartTimeout, IdleTimeout: cfg.IdleTimeout,
		MaxLifetime: cfg.MaxLifetime, ReconcileInterval: cfg.ReconcileEvery, DestroyGrace: cfg.DestroyGrace,
		MaxMachines: cfg.MaxMachines, Width: w, Height: h, Pool: pool, PoolMaxAge: cfg.PoolMaxAge,
		HeartbeatInterval: cfg.Heartbeat, ReplicaTimeout: cfg.ReplicaTimeout,
	}, session.Deps{Store: st, Driver: drv, Providers: providers, Vault: m.Vault, Notifier: notifier,
		Logger: m.Log, Registry: m.Registry, MachineKey: machineKey})
	m.onClose("session manager", func(context.Context) error { return m.Manager.Close() })

	webHandler, err := newWeb(cfg)
	if err != nil {
		return nil, err
	}

	// Listen before building the API, so that viewer URLs carry the real
	// port when the configured one is 0.
	m.listener, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	m.onClose("listener", func(context.Context) error {
		if err := m.listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	m.URL = "http://" + m.listener.Addr().String()
	if m.Config.PublicURL == "http://"+cfg.Listen {
		m.Config.PublicURL = m.URL
	}

	// The gateway admits browsers on the public URL's origin: built once
	// the URL carries the real port.
	gw, tokens, err := newGateway(m.Config, st, drv, kr, machineKey, m.Log, m.Registry)
	if err != nil {
		return nil, err
	}
	m.onClose("viewer gateway", gw.Shutdown)

	metrics := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	apiMetrics := metrics
	if cfg.MetricsListen != "" {
		apiMetrics = nil // only on the metrics listener
		if err := m.listenMetrics(metrics); err != nil {
			return nil, err
		}
	}
	m.connectionLimits()
	m.API, err = httpapi.New(httpapi.Config{
		PublicURL: m.Config.PublicURL, APIKeys: keys, ViewerTokenTTL: cfg.ViewerTokenTTL, Replica: cfg.Replica,
		HeaderTimeout: cfg.HTTPHeaderTimeout, BodyTimeout: cfg.HTTPBodyTimeout, IdleTimeout: cfg.HTTPIdleTimeout,
		MaxConnections: m.Config.MaxConnections, MaxViewerConnections: m.Config.MaxViewerConnections,
	}, httpapi.Deps{
		Sessions: m.Manager, Store: st, Tokens: tokens, Providers: providers, Credentials: m.Vault,
		ProviderCheck: providerCheck(drv, providers.All(), m.Log),
		Checks:        []httpapi.Check{{Name: "driver", Check: drv.Check}},
		VNC:           gw, Web: webHandler,
		Metrics: apiMetrics,
		Pool:    m.Manager,
	}, m.Log, m.Registry)
	if err != nil {
		return nil, err
	}

	m.server, m.listener = m.API.HTTPServer(m.listener, slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn))
	m.onClose("http server", func(ctx context.Context) error {
		m.API.Drain()
		return m.server.Shutdown(ctx)
	})
	return m, nil
}

// listenMetrics listens on MetricsListen for GET /metrics alone, without
// an API key; Run serves it.
func (m *Main) listenMetrics(h http.Handler) error {
	l, err := net.Listen("tcp", m.Config.MetricsListen)
	if err != nil {
		return fmt.Errorf("listen on %s (MC_METRICS_LISTEN): %w", m.Config.MetricsListen, err)
	}
	m.metricsListener = l
	m.MetricsURL = "http://" + l.Addr().String()
	m.metricsServer = &http.Server{Handler: httpapi.MetricsOnly(h), ReadHeaderTimeout: m.Config.HTTPHeaderTimeout,
		IdleTimeout: m.Config.HTTPIdleTimeout, ErrorLog: slog.NewLogLogger(m.Log.Handler(), slog.LevelWarn)}
	m.onClose("metrics server", func(ctx context.Context) error {
		err := m.metricsServer.Shutdown(ctx)
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
		return err
	})
	return nil
}

// connectionLimits raises the open-file limit to its hard limit and sets
// the caps on connections and viewers that are not configured from it
// (ConnectionLimits), in m.Config; it warns when configured caps exceed
// what the limit can hold.
func (m *Main) connectionLimits() {
	nofile, err := RaiseFileLimit()
	if err != nil {
		m.Log.Warn("open-file limit", mc.LogError, err, mc.LogReason, mc.ReasonRlimit)
	}
	if nofile == 0 { // unknown: assume the common default
		nofile = 1024
	}
	conns, viewers := ConnectionLimits(nofile)
	c := &m.Config
	if c.MaxConnections == 0 {
		c.MaxConnections = conns
	}
	if c.MaxViewerConnections == 0 {
		c.MaxViewerConnections = viewers
	}
	attrs := []any{"open_files", nofile, "max_connections", c.MaxConnections,
		"max_viewer_connections", c.MaxViewerConnections}
	if uint64(c.MaxConnections+2*c.MaxViewerConnections) > nofile {
		m.Log.Warn("connection caps above the open-file limit: the process may run out of file descriptors",
			append(attrs, mc.LogReason, mc.ReasonRlimit)...)
		return
	}
	m.Log.Info("connection limits", attrs...)
}

// APIKeysFileName is the file under the data directory that holds the API
// keys when none are configured: generated on first start.
const APIKeysFileName = "api-keys"

// apiKeys returns the hashes of the configured API keys. A server with no
// key would answer 401 to every request, so it never starts with none:
//   - keys given in MC_API_KEYS or MC_API_KEYS_FILE are used; a setting or
//     a file that is given but holds no key is an error (the operator meant
//     to set keys and did not);
//   - with neither, <data-dir>/api-keys is read; when it is missing, or
//     holds no key (emptied, or cut short before this version wrote it
//     atomically), a key is generated into it as on first start, printed
//     once, and the log says which of the two happened.
func (m *Main) apiKeys() ([]httpapi.KeyHash, error) {
	var raw []string
	add := func(s string) int {
		n := 0
		for _, k := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
			if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "#") {
				raw = append(raw, k)
				n++
			}
		}
		return n
	}
	if m.Config.APIKeys != "" && add(m.Config.APIKeys) == 0 {
		return nil, errors.New("MC_API_KEYS holds no API key; give at least one, or unset it to use " +
			filepath.Join(m.Config.DataDir, APIKeysFileName))
	}
	if f := m.Config.APIKeysFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read API keys file: %w", err)
		}
		if add(string(b)) == 0 {
			return nil, fmt.Errorf("MC_API_KEYS_FILE %s holds no API key (one per line); "+
				"refusing to start a server that would refuse every request", f)
		}
	}
	if len(raw) == 0 {
		path := filepath.Join(m.Config.DataDir, APIKeysFileName)
		b, err := os.ReadFile(path)
		switch {
		case err == nil && add(string(b)) > 0:
		case err == nil || errors.Is(err, os.ErrNotExist):
			key := "mc_" + mc.NewSecret(32).Reveal()
			if err := atomicfile.Write(path, []byte(key+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("write generated API key: %w", err)
			}
			why := "first start"
			if err == nil {
				why = "the file held no key"
			}
			m.Log.Warn("generated an API key", "file", path, mc.LogReason, why,
				"key_id", httpapi.HashAPIKey(key).ID())
			m.GeneratedAPIKey = mc.SecretOf(key)
			raw = append(raw, key)
		default:
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	keys := make([]httpapi.KeyHash, 0, len(raw))
	for _, k := range raw {
		if len(k) < 16 {
			return nil, errors.New("MC_API_KEYS: every API key must be at least 16 characters")
		}
		keys = append(keys, httpapi.HashAPIKey(k))
	}
	return keys, nil
}

// Run reconciles, serves until ctx ends, and returns. Call Close after.
func (m *Main) Run(ctx context.Context) error {
	m.Manager.Run(ctx)
	m.Log.Info("serving", "url", m.URL, "driver", m.Driver.Name(), "store", storeKind(m.Config))
	if m.out != nil {
		w := bufio.NewWriter(m.out)
		fmt.Fprintf(w, "master-controller is serving at %s\n", m.Config.PublicURL)
		fmt.Fprintf(w, "  dashboard: %s/\n", m.Config.PublicURL)
		if !m.GeneratedAPIKey.IsZero() {
			fmt.Fprintf(w, "  API key (generated, shown once; also in %s): %s\n",
				filepath.Join(m.Config.DataDir, APIKeysFileName), m.GeneratedAPIKey.Reveal())
		} else if m.Config.APIKeys == "" && m.Config.APIKeysFile == "" {
			fmt.Fprintf(w, "  API key: in %s\n", filepath.Join(m.Config.DataDir, APIKeysFileName))
		}
		w.Flush()
	}
	errc := make(chan error, 2)
	go func() { errc <- m.server.Serve(m.listener) }()
	if m.metricsServer != nil {
		m.Log.Info("serving metrics", "url", m.MetricsURL+"/metrics")
		go func() { errc <- m.metricsServer.Serve(m.metricsListener) }()
	}
	select {
	case <-ctx.Done():
		m.Log.Info("shutting down", mc.LogReason, mc.ReasonSignal)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	}
}

// Close shuts everything down in reverse order of creation, each step named
// in the log and bounded by the shutdown timeout as a whole.
func (m *Main) Close() error {
	timeout := m.Config.ShutdownTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		c := m.closers[i]
		start := time.Now()
		if err := c.fn(ctx); err != nil {
			m.Log.Error("close "+c.name, mc.LogError, err, mc.LogReason, mc.ReasonCloseFailed)
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
			continue
		}
		m.Log.Info("closed "+c.name, "seconds", time.Since(start).Seconds())
	}
	m.closers = nil
	return errors.Join(errs...)
}

func storeKind(c Config) string {
	if c.Postgres() {
		return "postgres"
	}
	return "sqlite"
}
