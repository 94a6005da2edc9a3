// Package drivertest is the conformance suite that every mc.Driver passes.
//
// A driver's test calls Run with a constructor and the Options that say what
// the driver cannot do:
//
//	func TestConformance(t *testing.T) {
//		drivertest.Run(t, func(t *testing.T) mc.Driver { return newDriver(t) },
//			drivertest.Options{Kill: killMachine})
//	}
//
// The suite starts real machines and checks them from the outside: the VNC
// address answers an RFB banner, the agent answers /health with its token and
// refuses without it, Inspect and List see the machine, Destroy removes it
// (and is idempotent, also after a cancelled Create), Wait sees a machine die
// within about a second, and two machines get distinct addresses.
package drivertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/rfb"
)

// Options tell the suite what a driver cannot do and how to reach behind it.
type Options struct {
	// Kill kills machine id's processes (or VM) from outside, as a crash or an
	// OOM kill would, without telling the driver. Nil: the driver cannot, and
	// the Wait-after-kill test is skipped.
	Kill func(t testing.TB, id string)
	// Leftovers, when set, lists what is still on the host of the machine
	// of spec (processes, namespaces, devices, directories, leases, which
	// belong to spec.SessionID), each as a short description; the suite
	// requires none after Destroy.
	Leftovers func(t testing.TB, spec mc.MachineSpec) []string
	// ReadyTimeout bounds the wait for the RFB banner and agent health
	// (default 60 s: two shared cores start Chromium slowly).
	ReadyTimeout time.Duration
	// NoConcurrent says the driver cannot run two machines at once.
	NoConcurrent bool
	// Spec, when set, adjusts the spec of every machine the suite creates.
	Spec func(spec *mc.MachineSpec)
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 60 * time.Second
}

// Run runs the conformance suite. newDriver is called once per subtest; it
// may return the same driver each time or a fresh one over the same host
// state. The subtests run one after another.
func Run(t *testing.T, newDriver func(t *testing.T) mc.Driver, opts Options) {
	s := &suite{newDriver: newDriver, opts: opts}
	t.Run("Capabilities", s.testCapabilities)
	t.Run("Check", s.testCheck)
	t.Run("Lifecycle", s.testLifecycle)
	t.Run("DestroyUnknown", s.testDestroyUnknown)
	t.Run("CancelledCreate", s.testCancelledCreate)
	t.Run("WaitAfterKill", s.testWaitAfterKill)
	t.Run("TwoMachines", s.testTwoMachines)
}

// netip127 is the network of loopback machines.
var netip127 = netip.MustParsePrefix("127.0.0.1/32")

type suite struct {
	newDriver func(t *testing.T) mc.Driver
	opts      Options
}

// Spec returns a spec for a new machine with fresh secrets.
func (s *suite) spec() mc.MachineSpec {
	spec := mc.MachineSpec{
		ID:        mc.NewMachineID(),
		SessionID: mc.NewID(),
		Provider:  "demo",
		Secrets:   mc.NewMachineSecrets(),
		Width:     1024,
		Height:    768,
	}
	if s.opts.Spec != nil {
		s.opts.Spec(&spec)
	}
	return spec
}

// create starts a machine and registers its destruction.
func (s *suite) create(t *testing.T, d mc.Driver) (mc.MachineSpec, mc.Machine) {
	t.Helper()
	spec := s.spec()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, spec.ID); err != nil {
			t.Errorf("cleanup: Destroy(%s): %v", spec.ID, err)
		}
	})
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return spec, m
}

func (s *suite) testCapabilities(t *testing.T) {
	d := s.newDriver(t)
	if d.Name() == "" {
		t.Error("Name() is empty")
	}
	c := d.Capabilities()
	if !slices.Contains([]string{"netns", "userns", "loopback", "vm"}, c.Isolation) {
		t.Errorf("Isolation = %q, want netns, userns, loopback or vm", c.Isolation)
	}
	if c.Isolation == "userns" {
		// Machines on Unix sockets below one directory, no network.
		if !filepath.IsAbs(c.SocketDir) {
			t.Errorf("userns SocketDir = %q, want an absolute directory", c.SocketDir)
		}
	} else if !c.Network.IsValid() {
		t.Errorf("Network = %v, want a valid prefix", c.Network)
	}
	if c.MaxMachines < 1 {
		t.Errorf("MaxMachines = %d, want ≥ 1", c.MaxMachines)
	}
	if c.Isolation == "loopback" {
		if c.Network != netip127 {
			t.Errorf("loopback Network = %v, want %v", c.Network, netip127)
		}
		if c.PortLo < 1 || c.PortHi > 65535 || c.PortLo > c.PortHi {
			t.Errorf("loopback ports [%d, %d], want a range in [1, 65535]", c.PortLo, c.PortHi)
		}
	}
}

func (s *suite) testCheck(t *testing.T) {
	d := s.newDriver(t)
	if err := d.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// testLifecycle walks one machine through its life.
func (s *suite) testLifecycle(t *testing.T) {
	d := s.newDriver(t)
	ctx := t.Context()
	spec, m := s.create(t, d)
	s.checkMachine(t, d, spec, m)

	start := time.Now()
	WaitRFB(t, m.VNCEndpoint().String(), s.opts.readyTimeout())
	t.Logf("RFB banner %v after Create returned", time.Since(start))
	WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, s.opts.readyTimeout())
	t.Logf("agent healthy %v after Create returned", time.Since(start))

	// Without the token, or with a wrong one, the agent refuses.
	for _, tok := range []mc.Secret{{}, mc.SecretOf("wrong")} {
		if code, err := health(ctx, m.AgentEndpoint().String(), tok); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET /health with token %q: status %d, %v; want %d", tok, code, err, http.StatusUnauthorized)
		}
	}

	st, err := d.Inspect(ctx, spec.ID)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if !st.Running || st.ID != spec.ID || st.Machine != m {
		t.Errorf("Inspect = %+v, want running, id %s, machine %+v", st, spec.ID, m)
	}
	if st.StartedAt.IsZero() {
		t.Errorf("Inspect StartedAt is zero")
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if i := slices.IndexFunc(list, func(x mc.MachineStatus) bool { return x.ID == spec.ID }); i < 0 {
		t.Errorf("List has no %s", spec.ID)
	} else if !list[i].Running || list[i].Machine != m {
		t.Errorf("List entry = %+v, want running with machine %+v", list[i], m)
	}

	// Wait blocks while the machine runs, and returns ctx's error.
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = d.Wait(wctx, spec.ID)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a running machine with a 200 ms ctx = %v, want context.DeadlineExceeded", err)
	}

	// Wait returns nil once Destroy has removed the machine.
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		waited <- d.Wait(wctx, spec.ID)
	}()
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := <-waited; err != nil && mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("Wait across Destroy = %v, want nil (or not_found)", err)
	}
	s.checkGone(t, d, spec, m)
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if err := d.Wait(ctx, spec.ID); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("Wait after Destroy = %v, want not_found", err)
	}
}

// checkMachine checks what Create returned.
func (s *suite) checkMachine(t testing.TB, d mc.Driver, spec mc.MachineSpec, m mc.Machine) {
	t.Helper()
	c := d.Capabilities()
	if m.ID != spec.ID {
		t.Errorf("Machine.ID = %q, want %q", m.ID, spec.ID)
	}
	// Reconcile matches machines to sessions by the session id the driver
	// reports, and tells pooled machines by their mark.
	if st, err := d.Inspect(t.Context(), spec.ID); err != nil || st.SessionID != spec.SessionID || st.Pooled != spec.Pooled {
		t.Errorf("Inspect(%s) = session %q, pooled %v, %v; want session %s, pooled %v", spec.ID, st.SessionID, st.Pooled, err,
			spec.SessionID, spec.Pooled)
	}
	if m.Driver != d.Name() {
		t.Errorf("Machine.Driver = %q, want %q", m.Driver, d.Name())
	}
	if c.SocketDir != "" {
		// A machine on Unix sockets only: a directory of its own below
		// the driver's, and no TCP address.
		if rel, err := filepath.Rel(c.SocketDir, m.SocketDir); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			t.Errorf("Machine.SocketDir = %q, want a directory below %s", m.SocketDir, c.SocketDir)
		}
		if m.VNCPort != 0 || m.AgentPort != 0 {
			t.Errorf("Machine has ports %d, %d beside its sockets; want none", m.VNCPort, m.AgentPort)
		}
		return
	}
	if !m.IP.IsValid() || !c.Network.Contains(m.IP) {
		t.Errorf("Machine.IP = %v, want an address in %v", m.IP, c.Network)
	}
	for name, p := range map[string]int{"VNCPort": m.VNCPort, "AgentPort": m.AgentPort} {
		if p < 1 || p > 65535 {
			t.Errorf("Machine.%s = %d, want a port", name, p)
		}
		if c.Isolation == "loopback" && (p < c.PortLo || p > c.PortHi) {
			t.Errorf("Machine.%s = %d, want in [%d, %d]", name, p, c.PortLo, c.PortHi)
		}
	}
	if m.VNCAddr() == m.AgentAddr() {
		t.Errorf("VNC and agent share %v", m.VNCAddr())
	}
}

// checkGone checks that nothing of the machine of spec is left.
func (s *suite) checkGone(t testing.TB, d mc.Driver, spec mc.MachineSpec, m mc.Machine) {
	t.Helper()
	id := spec.ID
	ctx := context.Background()
	if st, err := d.Inspect(ctx, id); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("Inspect after Destroy = %+v, %v; want not_found", st, err)
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Errorf("List: %v", err)
	}
	for _, x := range list {
		if x.ID == id {
			t.Errorf("List after Destroy still has %s: %+v", id, x)
		}
	}
	if m.VNCPort != 0 {
		if c, err := net.DialTimeout("tcp", m.VNCEndpoint().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("VNC address %v still accepts connections after Destroy", m.VNCAddr())
		}
	}
	if s.opts.Leftovers != nil {
		if left := s.opts.Leftovers(t, spec); len(left) > 0 {
			t.Errorf("after Destroy of %s the host still has: %s", id, strings.Join(left, "; "))
		}
	}
}

func (s *suite) testDestroyUnknown(t *testing.T) {
	d := s.newDriver(t)
	ctx := t.Context()
	id := mc.NewID()
	if err := d.Destroy(ctx, id); err != nil {
		t.Errorf("Destroy of an unknown id: %v", err)
	}
	if _, err := d.Inspect(ctx, id); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("Inspect of an unknown id: %v, want not_found", err)
	}
	if err := d.Wait(ctx, id); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("Wait of an unknown id: %v, want not_found", err)
	}
}

// testCancelledCreate cancels Create at several points; whatever Create
// returned, Destroy must leave nothing.
func (s *suite) testCancelledCreate(t *testing.T) {
	d := s.newDriver(t)
	for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			spec := s.spec()
			ctx, cancel := context.WithCancel(t.Context())
			if after == 0 {
				cancel()
			} else {
				timer := time.AfterFunc(after, cancel)
				defer timer.Stop()
			}
			m, err := d.Create(ctx, spec)
			cancel()
			t.Logf("Create cancelled after %v: err %v", after, err)
			if err != nil {
				if c := mc.ErrorCode(err); c != mc.EINTERNAL && c != mc.EUNAVAILABLE && !errors.Is(err, context.Canceled) {
					t.Errorf("cancelled Create: %v, want context.Canceled (or internal/unavailable)", err)
				}
			}
			dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer dcancel()
			if err := d.Destroy(dctx, spec.ID); err != nil {
				t.Fatalf("Destroy after cancelled Create: %v", err)
			}
			s.checkGone(t, d, spec, m)
		})
	}
}

func (s *suite) testWaitAfterKill(t *testing.T) {
	if s.opts.Kill == nil {
		t.Skip("driver declares no Kill hook")
	}
	d := s.newDriver(t)
	ctx := t.Context()
	spec, m := s.create(t, d)
	WaitRFB(t, m.VNCEndpoint().String(), s.opts.readyTimeout())

	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx, spec.ID) }()
	s.opts.Kill(t, spec.ID)
	killed := time.Now()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait after kill = %v, want nil", err)
		}
		t.Logf("Wait returned %v after the kill", time.Since(killed))
	case <-time.After(2 * time.Second):
		t.Fatalf("Wait has not returned 2 s after the machine was killed, want within about 1 s")
	}
	st, err := d.Inspect(ctx, spec.ID)
	if err == nil && st.Running {
		t.Errorf("Inspect after kill = %+v, want not running", st)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("Destroy after kill: %v", err)
	}
	s.checkGone(t, d, spec, m)
}

func (s *suite) testTwoMachines(t *testing.T) {
	if s.opts.NoConcurrent {
		t.Skip("driver declares it runs one machine at a time")
	}
	d := s.newDriver(t)
	if d.Capabilities().MaxMachines < 2 {
		t.Skip("MaxMachines < 2 on this host")
	}
	var (
		wg    sync.WaitGroup
		specs [2]mc.MachineSpec
		ms    [2]mc.Machine
		errs  [2]error
	)
	for i := range 2 {
		specs[i] = s.spec()
		specs[i].Pooled = i == 1 // one for the warm pool: List marks it
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = d.Destroy(ctx, specs[i].ID)
		})
		wg.Go(func() { ms[i], errs[i] = d.Create(t.Context(), specs[i]) })
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("Create %d: %v", i, errs[i])
		}
		s.checkMachine(t, d, specs[i], ms[i])
	}
	if ms[0].VNCEndpoint() == ms[1].VNCEndpoint() || ms[0].AgentEndpoint() == ms[1].AgentEndpoint() {
		t.Errorf("two machines share an address: %+v and %+v", ms[0], ms[1])
	}
	list, err := d.List(t.Context())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for i := range 2 {
		j := slices.IndexFunc(list, func(x mc.MachineStatus) bool { return x.ID == specs[i].ID })
		switch {
		case j < 0:
			t.Errorf("List has no machine %s", specs[i].ID)
		case list[j].Pooled != specs[i].Pooled:
			t.Errorf("List entry of machine %s: pooled %v, want %v", specs[i].ID, list[j].Pooled, specs[i].Pooled)
		}
	}
	for i := range 2 {
		WaitRFB(t, ms[i].VNCEndpoint().String(), s.opts.readyTimeout())
		WaitHealth(t, ms[i].AgentEndpoint().String(), specs[i].Secrets.AgentToken, s.opts.readyTimeout())
	}
	// Each agent accepts only its own token.
	if code, err := health(t.Context(), ms[0].AgentEndpoint().String(), specs[1].Secrets.AgentToken); err != nil || code != http.StatusUnauthorized {
		t.Errorf("machine 0 with machine 1's token: %d, %v; want %d", code, err, http.StatusUnauthorized)
	}
	for i := range 2 {
		if err := d.Destroy(t.Context(), specs[i].ID); err != nil {
			t.Errorf("Destroy %d: %v", i, err)
		}
		s.checkGone(t, d, specs[i], ms[i])
	}
}

// WaitRFB dials addr (an mc.Endpoint's String: host:port or unix:path) until it answers an RFB 3.x banner or timeout passes,
// with a short backoff between attempts, and fails t on timeout.
func WaitRFB(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	if err := DialRFB(context.Background(), addr, timeout); err != nil {
		t.Fatalf("RFB banner from %s: %v", addr, err)
	}
}

// DialRFB dials addr until it answers an RFB 3.x banner ("RFB 003.00x\n")
// or timeout passes (see testutil.Poll).
func DialRFB(ctx context.Context, addr string, timeout time.Duration) error {
	ep := mc.ParseEndpoint(addr)
	return testutil.Poll(ctx, timeout, func() error { return rfb.Probe(ctx, ep) })
}

// WaitHealth polls the agent at addr (host:port or unix:path) until GET /health with token answers
// 200 or timeout passes, and fails t on timeout.
func WaitHealth(t testing.TB, addr string, token mc.Secret, timeout time.Duration) {
	t.Helper()
	if err := PollHealth(context.Background(), addr, token, timeout); err != nil {
		t.Fatalf("agent health at %s: %v", addr, err)
	}
}

// PollHealth polls GET http://addr/health with token until 200 or timeout.
func PollHealth(ctx context.Context, addr string, token mc.Secret, timeout time.Duration) error {
	return testutil.Poll(ctx, timeout, func() error {
		code, err := health(ctx, addr, token)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
}

// client dials the endpoint that a request's host names: "agent" for the
// address in its context.
var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
	DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		if ep, ok := ctx.Value(endpointKey{}).(mc.Endpoint); ok {
			return d.DialContext(ctx, ep.Network, ep.Address)
		}
		return d.DialContext(ctx, network, addr)
	},
}}

type endpointKey struct{}

// health returns the status of GET /health with token ("" sends no header)
// from the agent at addr (host:port or unix:path).
func health(ctx context.Context, addr string, token mc.Secret) (int, error) {
	ep := mc.ParseEndpoint(addr)
	ctx = context.WithValue(ctx, endpointKey{}, ep)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+agentproto.PathHealth, nil)
	if err != nil {
		return 0, err
	}
	if !token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+token.Reveal())
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
