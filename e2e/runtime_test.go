package e2e_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

// TestLocalSession is issue 3's end-to-end check of the local runtime,
// through the API, in both isolation modes: a demo session reaches ready;
// its VNC server answers "RFB 003.008" to a raw TCP client; a screenshot
// through VNC with the session's own password shows the demo sign-in page;
// and within 2 s of the cancel answer its namespace, processes, directory
// and lease are all gone.
func TestLocalSession(t *testing.T) {
	for _, mode := range []string{"netns", "loopback"} {
		t.Run(mode, func(t *testing.T) {
			env := controllerEnv(t, mode)
			c := startController(t, env)
			if got := c.Driver.Capabilities().Isolation; got != mode {
				t.Fatalf("driver isolation = %q, want %q", got, mode)
			}

			cr := c.api.createSession(t, "alice", "demo")
			if cr.Session.State != mc.StatePending {
				t.Errorf("created session state = %s, want pending", cr.Session.State)
			}
			id := cr.Session.ID
			s := testutil.WaitState(t, c.Store, id, mc.StateReady, 60*time.Second)
			if got := c.api.session(t, id).State; got != mc.StateReady {
				t.Errorf("API shows state %s, want ready", got)
			}

			// The machine's address: on the bridge's network, or loopback.
			m := s.Machine
			if !strings.HasPrefix(m.ID, "m-") || m.Driver != "local" || !m.IP.IsValid() || m.VNCPort == 0 {
				t.Fatalf("session machine = %+v", m)
			}
			switch mode {
			case "netns":
				if pfx := netip.MustParsePrefix(env["MC_NETWORK"]); !pfx.Contains(m.IP) {
					t.Errorf("machine IP %s is outside the machine network %s", m.IP, pfx)
				}
			case "loopback":
				if !m.IP.IsLoopback() {
					t.Errorf("machine IP %s is not loopback", m.IP)
				}
			}

			// A raw TCP client reads the RFB banner.
			conn, err := net.DialTimeout("tcp", m.VNCAddr().String(), 5*time.Second)
			if err != nil {
				t.Fatalf("dial VNC: %v", err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			banner := make([]byte, 12)
			_, err = io.ReadFull(conn, banner)
			conn.Close()
			if err != nil || string(banner) != "RFB 003.008\n" {
				t.Fatalf("VNC banner = %q, %v; want %q", banner, err, "RFB 003.008\n")
			}

			// A screenshot through VNC with the password the machine key
			// derives shows the provider's start page; a wrong password is
			// refused.
			waitDemoPage(t, c.Store, id, m.VNCAddr().String(), c.MachineKey.Secrets(id).VNCPassword, 30*time.Second)
			if _, err := vncCapture(m.VNCAddr().String(), mc.SecretOf("wrong-pw")); err == nil {
				t.Error("VNC capture with a wrong password succeeded")
			}

			// Everything the machine holds exists before the cancel, so that
			// each check after it can fail.
			ms := readMachine(t, c.dataDir, m.ID)
			if mode == "netns" {
				if ms.Namespace == "" || !namespaces(t)[ms.Namespace] {
					t.Fatalf("namespace %q of the machine is not in ip netns list", ms.Namespace)
				}
			} else if ms.Namespace != "" {
				t.Errorf("loopback machine has namespace %q", ms.Namespace)
			}
			pids := machineProcs(ms)
			if len(pids) < 3 {
				t.Errorf("machine processes: %s; want at least the agent, Xvnc and Chromium", procNames(pids))
			}
			names := procNames(pids)
			for _, want := range []string{"agent", "Xvnc", "chrom"} {
				if !strings.Contains(names, want) {
					t.Errorf("machine processes %s: none is %s", names, want)
				}
			}
			if l, err := leaseOf(t.Context(), c.Store, id); err != nil || l == "" || !strings.HasPrefix(l, c.pool+"/") {
				t.Errorf("lease of the machine = %q, %v; want one in pool %s", l, err, c.pool)
			}
			before := leftovers(t, c.Store, ms)
			wantKinds := []string{"processes", "directory", "lease"}
			if mode == "netns" {
				wantKinds = append(wantKinds, "namespace", "veth")
			}
			if ms.TmpDir != "" {
				wantKinds = append(wantKinds, "tmp directory")
			}
			for _, k := range wantKinds {
				if !slices.ContainsFunc(before, func(l string) bool { return strings.HasPrefix(l, k+" ") }) {
					t.Errorf("before cancel, the machine has no %s (found %q)", k, before)
				}
			}

			// Cancel: soon after the answer, nothing is left (how soon is logged).
			var got struct {
				Session mc.Session `json:"session"`
			}
			if code := c.api.Do(t, "POST", "/api/v1/sessions/"+id+"/cancel", nil, &got); code != http.StatusOK {
				t.Fatalf("cancel: status %d", code)
			}
			answered := time.Now()
			if got.Session.State != mc.StateCancelled || got.Session.Reason != mc.ReasonCancelledByAPI {
				t.Errorf("cancel answered %s/%s, want cancelled/cancelled_by_api", got.Session.State, got.Session.Reason)
			}
			var left []string
			_ = testutil.Poll(t.Context(), 30*time.Second, func() error {
				left = leftovers(t, c.Store, ms)
				if len(left) > 0 {
					return errLeft
				}
				return nil
			})
			if len(left) > 0 {
				t.Errorf("30 s after the cancel answer, the machine still has: %s", strings.Join(left, "; "))
			} else {
				t.Logf("machine gone %.0f ms after the cancel answer", time.Since(answered).Seconds()*1000)
			}
		})
	}
}
