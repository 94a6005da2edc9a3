// Package fake is a runtime driver without machines: each "machine" is an
// in-process VNC server and agent on loopback. It serves the manager's unit
// tests, race tests and the offline demo (MC_DRIVER=fake), and passes the
// same conformance suite (driver/drivertest) as the real drivers.
package fake

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"image/color"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/rfb/rfbtest"
)

// Config tunes the fake driver.
type Config struct {
	// StartDelay is how long Create takes, so that callers can observe the
	// starting state (default 0).
	StartDelay time.Duration
	// MaxMachines is the capacity it reports (default 1000).
	MaxMachines int
	// Width and Height of the fake screen (default 64×48).
	Width, Height int
	// Colour of the fake screen (default #1e6fd9, the demo page's blue).
	Colour color.RGBA
	// Cluster makes the driver report Capabilities.Cluster, as a driver
	// whose machines outlive the replica that started them; with Share,
	// two managers in one test see one cluster.
	Cluster bool
	// Unsandboxed makes the machines' browsers report on chrome://sandbox
	// what Chromium started with --no-sandbox reports: layer 1 None,
	// no namespaces or seccomp, NOT adequately sandboxed.
	Unsandboxed bool
	// RestlessLogin makes a running login's status change at every
	// request for it (a new Seq each time), as a broken or hostile
	// agent's may.
	RestlessLogin bool
}

// Driver is the fake driver (MC_DRIVER=fake): each machine is an in-process VNC server (RFB 3.8
// with VNC authentication, a solid-colour screen) and an in-process agent
// (health, login start/status/result) on loopback ports. It runs where no
// browser can (the manager's unit tests, 200-session race tests) and passes
// the same conformance suite as real drivers.
type Driver struct {
	cfg Config
	*machines
}

// machines are a driver's machines, which Share hands to another Driver.
type machines struct {
	mu sync.Mutex
	m  map[string]*fakeMachine
}

var _ mc.Driver = (*Driver)(nil)

// New returns a fake driver.
func New(cfg Config) *Driver {
	if cfg.MaxMachines <= 0 {
		cfg.MaxMachines = 1000
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		cfg.Width, cfg.Height = 64, 48
	}
	if cfg.Colour == (color.RGBA{}) {
		cfg.Colour = color.RGBA{0x1e, 0x6f, 0xd9, 0xff}
	}
	return &Driver{cfg: cfg, machines: &machines{m: map[string]*fakeMachine{}}}
}

// Share returns another Driver on f's machines, as a second controller
// replica sees the same cluster: each lists, waits on, drives and destroys
// the machines that either created.
func (f *Driver) Share() *Driver { return &Driver{cfg: f.cfg, machines: f.machines} }

type fakeMachine struct {
	status  mc.MachineStatus
	vnc     *rfbtest.FakeServer
	vncL    net.Listener
	agent   *http.Server
	agentL  net.Listener
	done    chan struct{}
	once    sync.Once
	oom     atomic.Bool // it exited of an OOM kill (OOMKill)
	mu      sync.Mutex
	login   agentproto.LoginStatus
	seq     int64         // the last login.Seq
	changed chan struct{} // closed and replaced when login changes
	files   map[string]string
	fetched bool
	polls   int // login status requests received
	// unsandboxed: its browser reports no sandbox (Config.Unsandboxed).
	unsandboxed bool
	// restless: its login status changes at every request (Config.RestlessLogin).
	restless bool
}

// Name returns "fake".
func (f *Driver) Name() string { return "fake" }

// Capabilities reports loopback isolation.
func (f *Driver) Capabilities() mc.Capabilities {
	return mc.Capabilities{Isolation: "loopback", Network: netip.MustParsePrefix("127.0.0.1/32"),
		PortLo: 1024, PortHi: 65535, MaxMachines: f.cfg.MaxMachines, Cluster: f.cfg.Cluster}
}

// Check always passes: the fake needs nothing from the host.
func (f *Driver) Check(context.Context) error { return nil }

// Create starts a fake machine.
func (f *Driver) Create(ctx context.Context, spec mc.MachineSpec) (mc.Machine, error) {
	if spec.ID == "" || spec.Secrets.VNCPassword.IsZero() || spec.Secrets.AgentToken.IsZero() {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonBadSpec, "a machine needs an id and secrets")
	}
	f.mu.Lock()
	if _, ok := f.m[spec.ID]; ok {
		f.mu.Unlock()
		return mc.Machine{}, mc.Errorf(mc.ECONFLICT, mc.ReasonMachineExists, "machine %s exists", spec.ID)
	}
	if len(f.m) >= f.cfg.MaxMachines {
		f.mu.Unlock()
		return mc.Machine{}, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonCapacity, "no capacity")
	}
	fm := &fakeMachine{done: make(chan struct{}), login: agentproto.LoginStatus{State: agentproto.StateIdle}, changed: make(chan struct{}),
		unsandboxed: f.cfg.Unsandboxed, restless: f.cfg.RestlessLogin}
	f.m[spec.ID] = fm // reserve, so Destroy during a slow Create finds it
	f.mu.Unlock()

	if f.cfg.StartDelay > 0 {
		select {
		case <-ctx.Done():
			f.remove(spec.ID)
			return mc.Machine{}, ctx.Err()
		case <-time.After(f.cfg.StartDelay):
		}
	}
	vncL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.remove(spec.ID)
		return mc.Machine{}, err
	}
	agentL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		vncL.Close()
		f.remove(spec.ID)
		return mc.Machine{}, err
	}
	mach := mc.Machine{ID: spec.ID, Driver: f.Name(), IP: netip.MustParseAddr("127.0.0.1"),
		VNCPort: vncL.Addr().(*net.TCPAddr).Port, AgentPort: agentL.Addr().(*net.TCPAddr).Port}
	fm.mu.Lock()
	fm.status = mc.MachineStatus{ID: spec.ID, SessionID: spec.SessionID, Pooled: spec.Pooled, Machine: mach,
		Running: true, StartedAt: time.Now()}
	fm.vnc = &rfbtest.FakeServer{Password: spec.Secrets.VNCPassword, Width: f.cfg.Width, Height: f.cfg.Height,
		Colour: f.cfg.Colour, Name: "fake " + spec.Provider}
	fm.vncL, fm.agentL = vncL, agentL
	fm.agent = &http.Server{Handler: fm.agentHandler(spec.Secrets.AgentToken), ReadHeaderTimeout: 5 * time.Second}
	fm.mu.Unlock()
	go func() { _ = fm.vnc.Serve(vncL) }()
	go func() { _ = fm.agent.Serve(agentL) }()

	f.mu.Lock()
	_, still := f.m[spec.ID]
	f.mu.Unlock()
	if !still || ctx.Err() != nil { // destroyed or cancelled meanwhile
		fm.stop()
		f.remove(spec.ID)
		if ctx.Err() != nil {
			return mc.Machine{}, ctx.Err()
		}
		return mc.Machine{}, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonDestroyed, "machine %s was destroyed while starting", spec.ID)
	}
	return mach, nil
}

// lookup returns machine id, or nil.
func (f *Driver) lookup(id string) *fakeMachine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[id]
}

func (f *Driver) remove(id string) {
	f.mu.Lock()
	delete(f.m, id)
	f.mu.Unlock()
}

func (fm *fakeMachine) stop() {
	fm.once.Do(func() {
		fm.mu.Lock()
		defer fm.mu.Unlock()
		if fm.vncL != nil {
			fm.vncL.Close()
			fm.vnc.CloseConns()
		}
		if fm.agent != nil {
			fm.agent.Close()
		}
		close(fm.done)
	})
}

// Destroy stops and forgets the machine; unknown ids are fine.
func (f *Driver) Destroy(_ context.Context, id string) error {
	f.mu.Lock()
	fm := f.m[id]
	delete(f.m, id)
	f.mu.Unlock()
	if fm != nil {
		fm.stop()
	}
	return nil
}

// Kill makes a machine exit as if its processes died: its servers close and
// Wait returns, but it stays listed (not running) until destroyed.
func (f *Driver) Kill(id string) {
	fm := f.lookup(id)
	if fm != nil {
		fm.stop()
	}
}

// OOMKill makes a machine exit as if the kernel had killed its processes
// for memory: as Kill, and Wait returns mc.MachineOOMError.
func (f *Driver) OOMKill(id string) {
	fm := f.lookup(id)
	if fm != nil {
		fm.oom.Store(true)
		fm.stop()
	}
}

// Inspect reports one machine. Errors: ENOTFOUND.
func (f *Driver) Inspect(_ context.Context, id string) (mc.MachineStatus, error) {
	fm := f.lookup(id)
	if fm == nil {
		return mc.MachineStatus{}, mc.Errorf(mc.ENOTFOUND, mc.ReasonNoMachine, "no machine %s", id)
	}
	return fm.snapshot(), nil
}

func (fm *fakeMachine) snapshot() mc.MachineStatus {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	st := fm.status
	select {
	case <-fm.done:
		st.Running = false
		st.Detail = "exited"
	default:
	}
	return st
}

// List reports every machine.
func (f *Driver) List(context.Context) ([]mc.MachineStatus, error) {
	f.mu.Lock()
	fms := make([]*fakeMachine, 0, len(f.m))
	for _, fm := range f.m {
		fms = append(fms, fm)
	}
	f.mu.Unlock()
	out := make([]mc.MachineStatus, 0, len(fms))
	for _, fm := range fms {
		if st := fm.snapshot(); st.ID != "" {
			out = append(out, st)
		}
	}
	return out, nil
}

// Wait blocks until the machine exits: nil, or mc.MachineOOMError after
// OOMKill. Errors: ENOTFOUND, EUNAVAILABLE (machine_oom).
func (f *Driver) Wait(ctx context.Context, id string) error {
	fm := f.lookup(id)
	if fm == nil {
		return mc.Errorf(mc.ENOTFOUND, mc.ReasonNoMachine, "no machine %s", id)
	}
	select {
	case <-fm.done:
		if fm.oom.Load() {
			return mc.MachineOOMError(id)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CompleteLogin makes the machine's login finish with files, as if the user
// had signed in. It reports whether the machine exists.
func (f *Driver) CompleteLogin(id string, files map[string]string) bool {
	fm := f.lookup(id)
	if fm == nil {
		return false
	}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.login = agentproto.LoginStatus{State: agentproto.StateComplete, Phase: mc.PhaseCaptured, URL: fm.login.URL}
	fm.files = files
	fm.announce()
	return true
}

// ProgressLogin moves the machine's running login to phase at url (scheme,
// host and path), as the agent reports it. It reports whether the machine
// exists.
func (f *Driver) ProgressLogin(id string, phase mc.LoginPhase, url string) bool {
	fm := f.lookup(id)
	if fm == nil {
		return false
	}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.login.Phase, fm.login.URL = phase, url
	fm.announce()
	return true
}

// FailLogin makes the machine's login fail with a reason code and the
// command's last (redacted) lines.
func (f *Driver) FailLogin(id string, reason mc.Reason, lines ...string) bool {
	fm := f.lookup(id)
	if fm == nil {
		return false
	}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	fm.login = agentproto.LoginStatus{State: agentproto.StateFailed, Reason: reason, Message: "the login failed", Lines: lines}
	fm.announce()
	return true
}

// VNC returns the fake VNC server of a machine (nil if unknown), for tests
// that count connections.
func (f *Driver) VNC(id string) *rfbtest.FakeServer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fm := f.m[id]; fm != nil {
		fm.mu.Lock()
		defer fm.mu.Unlock()
		return fm.vnc
	}
	return nil
}

// LoginPolls returns how many times the machine's login status has been
// asked for (0 if the machine is unknown): once it is asked, the login has
// started and the manager has recorded that as activity.
func (f *Driver) LoginPolls(id string) int {
	fm := f.lookup(id)
	if fm == nil {
		return 0
	}
	fm.mu.Lock()
	defer fm.mu.Unlock()
	return fm.polls
}

// sandbox is the machine's chrome://sandbox as its agent reports it.
func (fm *fakeMachine) sandbox() agentproto.BrowserSandbox { return BrowserSandbox(!fm.unsandboxed) }

// BrowserSandbox is a fake machine's chrome://sandbox as its agent reports
// it: the rows that matter of Chromium 156 on Linux, all on when sandboxed,
// else as Chromium with --no-sandbox shows them. CheckSandbox holds it to
// a real Chromium's report.
func BrowserSandbox(sandboxed bool) agentproto.BrowserSandbox {
	layer1, yes := "None", "No"
	if sandboxed {
		layer1, yes = agentproto.SandboxNamespace, "Yes"
	}
	sb := agentproto.BrowserSandbox{Adequate: sandboxed,
		Layers: []agentproto.SandboxLayer{{Name: agentproto.SandboxLayer1, Status: layer1, On: sandboxed}}}
	for _, name := range []string{agentproto.SandboxPIDNamespaces, agentproto.SandboxNetworkNamespaces,
		agentproto.SandboxSeccompBPF, agentproto.SandboxSeccompTSYNC} {
		sb.Layers = append(sb.Layers, agentproto.SandboxLayer{Name: name, Status: yes, On: sandboxed})
	}
	return sb
}

// CheckSandbox returns an error when real, a real machine's report (from
// its agent), differs from the fake's (BrowserSandbox(sandboxed)): a row
// the fake shows that real lacks or shows otherwise, or another verdict.
func CheckSandbox(real agentproto.BrowserSandbox, sandboxed bool) error {
	fake := BrowserSandbox(sandboxed)
	var diff []string
	for _, want := range fake.Layers {
		if got, ok := real.Layer(want.Name); !ok || got != want {
			diff = append(diff, fmt.Sprintf("row %+v, the fake's %+v", got, want))
		}
	}
	if real.Adequate != fake.Adequate {
		diff = append(diff, fmt.Sprintf("adequate %v, the fake's %v", real.Adequate, fake.Adequate))
	}
	if len(diff) > 0 {
		return fmt.Errorf("chrome://sandbox differs from the fake's: %s", strings.Join(diff, "; "))
	}
	return nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// announce wakes long polls of the login status; fm.mu is held.
func (fm *fakeMachine) announce() {
	fm.seq++
	fm.login.Seq = fm.seq
	close(fm.changed)
	fm.changed = make(chan struct{})
}

func (fm *fakeMachine) agentHandler(token mc.Secret) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET "+agentproto.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, agentproto.Health{VNC: true, Browser: true})
	})
	mux.HandleFunc("GET "+agentproto.PathSandbox, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, fm.sandbox())
	})
	mux.HandleFunc("POST "+agentproto.PathOpen, func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.OpenRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		reply(w, http.StatusOK, req)
	})
	mux.HandleFunc("POST "+agentproto.PathLoginStart, func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.LoginStartRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		fm.mu.Lock()
		if fm.login.State == agentproto.StateIdle {
			// Like the agent: a CLI login starts in starting_cli; a page
			// login's progress is the test's to report (ProgressLogin).
			fm.login = agentproto.LoginStatus{State: agentproto.StateRunning}
			if len(req.Provider.LoginCommand) > 0 {
				fm.login.Phase = mc.PhaseStartingCLI
			}
			fm.announce()
		}
		st := fm.login
		fm.mu.Unlock()
		reply(w, http.StatusAccepted, st)
	})
	mux.HandleFunc("GET "+agentproto.PathLoginStatus, func(w http.ResponseWriter, r *http.Request) {
		fm.mu.Lock()
		fm.polls++
		if fm.restless && fm.login.State == agentproto.StateRunning {
			fm.announce()
		}
		fm.mu.Unlock()
		// Like the real agent: ?wait=D holds the request while the login
		// runs, until its status changes or D passes (a long poll).
		if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && d > 0 {
			fm.mu.Lock()
			since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
			ch, waiting := fm.changed, fm.login.State == agentproto.StateRunning && fm.login.Seq == since
			fm.mu.Unlock()
			if !waiting {
				ch = closedChan
			}
			t := time.NewTimer(min(d, agentproto.MaxStatusWait))
			select {
			case <-ch:
			case <-t.C:
			case <-r.Context().Done():
			case <-fm.done:
			}
			t.Stop()
		}
		fm.mu.Lock()
		defer fm.mu.Unlock()
		reply(w, http.StatusOK, fm.login)
	})
	mux.HandleFunc("GET "+agentproto.PathLoginResult, func(w http.ResponseWriter, r *http.Request) {
		fm.mu.Lock()
		defer fm.mu.Unlock()
		switch {
		case fm.login.State != agentproto.StateComplete:
			reply(w, http.StatusConflict, agentproto.ErrorBody{Code: mc.ECONFLICT, Reason: mc.ReasonLoginNotComplete, Message: "the login is " + fm.login.State})
		case fm.fetched:
			reply(w, http.StatusGone, agentproto.ErrorBody{Code: "gone", Reason: mc.ReasonResultDelivered, Message: "the login result was already fetched"})
		default:
			fm.fetched = true
			reply(w, http.StatusOK, agentproto.LoginResult{Files: fm.files})
			fm.files = nil
		}
	})
	want := []byte("Bearer " + token.Reveal())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 || !strings.HasPrefix(r.URL.Path, "/") {
			reply(w, http.StatusUnauthorized, agentproto.ErrorBody{Code: mc.EUNAUTHORIZED, Reason: mc.ReasonBadAgentToken, Message: "missing or invalid agent token"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}
