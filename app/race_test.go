package app_test

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/rfb/rfbtest"
	"github.com/master-controller/mc/vault"
)

// fakeBlue is the fake machine's screen colour.
var fakeBlue = color.RGBA{0x1e, 0x6f, 0xd9, 0xff}

// viewer is one open viewer WebSocket that has completed the RFB handshake.
type viewer struct {
	id   string
	conn *websocket.Conn
	net  interface{ Read([]byte) (int, error) }
}

// openViewer opens the viewer WebSocket of a session on base (an http URL)
// and reads the RFB handshake and one framebuffer update through it.
func openViewer(ctx context.Context, base, id, tok string) (*viewer, error) {
	u := strings.Replace(base, "http://", "ws://", 1) + "/api/v1/sessions/" + id + "/vnc?token=" + url.QueryEscape(tok)
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(1 << 24)
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	img, err := rfbtest.Capture(nc, mc.Secret{})
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("rfb handshake: %w", err)
	}
	if got := img.RGBAAt(img.Bounds().Dx()/2, img.Bounds().Dy()/2); got != fakeBlue {
		c.CloseNow()
		return nil, fmt.Errorf("screen centre is %v, want %v", got, fakeBlue)
	}
	return &viewer{id: id, conn: c, net: nc}, nil
}

// closeCode reads until the viewer's WebSocket closes and returns the code.
func (v *viewer) closeCode() (websocket.StatusCode, string) {
	buf := make([]byte, 4096)
	for {
		if _, err := v.net.Read(buf); err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			return -1, err.Error()
		}
	}
}

// raceViewers is the old controller's failure, replayed: n sessions, each
// viewer WebSocket opened on viewerURL immediately after POST on creator
// (while the machine is still starting). Every viewer must read the RFB
// handshake; after cancel, every one must get close code 4410.
func raceViewers(t *testing.T, creator testutil.Client, viewerURL string, n int) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		viewers []*viewer
		errs    []error
		waited  []time.Duration
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c created
			if code := creator.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": fmt.Sprintf("race-%d", i), "provider": "demo"}, &c); code != 201 {
				mu.Lock()
				errs = append(errs, fmt.Errorf("create %d: status %d", i, code))
				mu.Unlock()
				return
			}
			start := time.Now()
			v, err := openViewer(ctx, viewerURL, c.Session.ID, c.Viewer.Token)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("viewer %d (%s): %w", i, c.Session.State, err))
				return
			}
			viewers = append(viewers, v)
			waited = append(waited, time.Since(start))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(viewers) != n {
		t.Fatalf("%d of %d viewers read the RFB handshake", len(viewers), n)
	}
	slowest := time.Duration(0)
	for _, w := range waited {
		slowest = max(slowest, w)
	}
	t.Logf("%d viewers connected while their machines started; slowest handshake %v", n, slowest)

	// End every session through the creator; every viewer gets a typed close.
	for _, v := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out struct{ Session mc.Session }
			if code := creator.Do(t, "POST", "/api/v1/sessions/"+v.id+"/cancel", nil, &out); code != 200 {
				t.Errorf("cancel %s: %d", v.id, code)
			}
			code, reason := v.closeCode()
			if code != 4410 || reason == "" {
				t.Errorf("viewer %s closed with %d %q, want 4410 with a reason", v.id, code, reason)
			}
		}()
	}
	wg.Wait()
}

func TestViewerRaceSQLite(t *testing.T) {
	tm := startMain(t, map[string]string{"MC_FAKE_START_DELAY": "300ms", "MC_LOG_LEVEL": "warn"})
	raceViewers(t, tm.api, tm.URL, 200)
}

// TestViewerRacePostgresTwoReplicas runs two server processes on one
// PostgreSQL database; sessions are created on A and viewed on B, which did
// not start them and holds nothing of them in memory.
func TestViewerRacePostgresTwoReplicas(t *testing.T) {
	db := pgtest.Shared(t)
	keys := sharedVaultKeys(t)
	env := func(replica string) map[string]string {
		return map[string]string{"MC_DATABASE_URL": db, "MC_DRIVER": "fake", "MC_REPLICA": replica, "MC_VAULT_KEYS": keys,
			"MC_DATA_DIR": t.TempDir(), "MC_API_KEYS": "race-key-0123456789abcdef", "MC_FAKE_START_DELAY": "300ms",
			"MC_LOG_LEVEL": "warn", "MC_MAX_MACHINES": "1000"}
	}
	a := startProcess(t, env("a"))
	b := startProcess(t, env("b"))
	raceViewers(t, a.api, b.URL, 200)
	if strings.Contains(b.Logs.String(), `"close_code":1006`) {
		t.Error("replica b logged an abnormal closure")
	}
}

// TestCrossReplicaWatch: a viewer waits on replica B for a session that is
// still starting; the session is cancelled through replica A; B's Watch
// (LISTEN/NOTIFY) must close the viewer with 4410. How fast is
// BenchmarkCrossReplicaWatch's figure.
func TestCrossReplicaWatch(t *testing.T) {
	a, b := twoReplicas(t, "watch")
	for i := range 3 {
		crossReplicaCancel(t, a, b, fmt.Sprintf("w-%d", i))
	}
}

// BenchmarkCrossReplicaWatch reports how fast a replica learns of a
// transition made by another (latency-ms-median), measured from the moment
// the cancel request is sent to A, so the figure is an upper bound (it
// includes A's HTTP round trip).
func BenchmarkCrossReplicaWatch(b *testing.B) {
	ra, rb := twoReplicas(b, "watch")
	var lat []time.Duration
	i := 0
	for b.Loop() {
		lat = append(lat, crossReplicaCancel(b, ra, rb, fmt.Sprintf("w-%d", i)))
		i++
	}
	b.ReportMetric(float64(testutil.Median(lat).Microseconds())/1000, "latency-ms-median")
}

// twoReplicas starts two server processes of the fake driver on one
// PostgreSQL database, whose machines never finish starting.
func twoReplicas(tb testing.TB, name string) (a, b *proc) {
	db := pgtest.Shared(tb)
	keys := sharedVaultKeys(tb)
	env := func(replica string) map[string]string {
		return map[string]string{"MC_DATABASE_URL": db, "MC_DRIVER": "fake", "MC_REPLICA": replica, "MC_VAULT_KEYS": keys,
			"MC_DATA_DIR": tb.TempDir(), "MC_API_KEYS": name + "-key-0123456789abcdef", "MC_FAKE_START_DELAY": "1h",
			"MC_START_TIMEOUT": "2h", "MC_LOG_LEVEL": "warn"}
	}
	return startProcess(tb, env("a")), startProcess(tb, env("b"))
}

// crossReplicaCancel creates a session for user through a, opens its viewer
// on b, cancels it through a and checks that b closes the viewer with 4410;
// it returns the time from sending the cancel to the close.
func crossReplicaCancel(tb testing.TB, a, b *proc, user string) time.Duration {
	tb.Helper()
	var c created
	if code := a.api.Do(tb, "POST", "/api/v1/sessions", map[string]string{"user_id": user, "provider": "demo"}, &c); code != 201 {
		tb.Fatalf("create: %d", code)
	}
	u := strings.Replace(b.URL, "http://", "ws://", 1) + "/api/v1/sessions/" + c.Session.ID + "/vnc?token=" + url.QueryEscape(c.Viewer.Token)
	ws, _, err := websocket.Dial(tb.Context(), u, nil)
	if err != nil {
		tb.Fatal(err)
	}
	closed := make(chan time.Time, 1)
	codec := make(chan websocket.StatusCode, 1)
	go func() {
		_, _, err := ws.Read(context.Background())
		closed <- time.Now()
		codec <- websocket.CloseStatus(err)
	}()
	// The viewer is waiting on B once B has answered the upgrade; let B's
	// Watch subscribe before the change is made.
	waitWatching(tb, b, c.Session.ID)
	sent := time.Now()
	var out struct{ Session mc.Session }
	if code := a.api.Do(tb, "POST", "/api/v1/sessions/"+c.Session.ID+"/cancel", nil, &out); code != 200 {
		tb.Fatalf("cancel: %d", code)
	}
	at := <-closed
	if code := <-codec; code != 4410 {
		tb.Fatalf("viewer closed with %d, want 4410", code)
	}
	return at.Sub(sent)
}

// sharedVaultKeys returns MC_VAULT_KEYS for replicas that share a store:
// they must share the vault keys, from which the viewer-token signing key
// and the machines' secrets are derived.
func sharedVaultKeys(t testing.TB) string {
	t.Helper()
	kr, err := vault.GenerateKeyring()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(kr.Encode())
}

// waitWatching waits until replica p reports a viewer waiting for session id
// (its mc_gateway_waiting_viewers gauge), bounded.
func waitWatching(tb testing.TB, p *proc, id string) {
	tb.Helper()
	testutil.WaitFor(tb, 10*time.Second, "a viewer waiting on the replica for "+id, func() error {
		if n := metricValue(tb, p.api, "mc_gateway_waiting_viewers"); n < 1 {
			return fmt.Errorf("mc_gateway_waiting_viewers %v", n)
		}
		return nil
	})
}
