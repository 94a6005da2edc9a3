package session_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/session"
)

// pgProxy forwards TCP connections to PostgreSQL. While down, it cuts every
// connection and refuses new ones at once, as a stopped server does; it is
// back by itself after upAfter refused connections.
type pgProxy struct {
	l      net.Listener
	target string

	mu      sync.Mutex
	down    bool
	upAfter int
	refused int
	conns   map[net.Conn]struct{}
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.Close(); p.takeDown(0) })
	go p.serve()
	return p
}

func (p *pgProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.refused++
			if p.upAfter > 0 && p.refused >= p.upAfter {
				p.down = false
			}
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.track(c, up)
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *pgProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

// takeDown cuts every connection; upAfter > 0 brings the server back after
// that many refused connections.
func (p *pgProxy) takeDown(upAfter int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.upAfter, p.refused = true, upAfter, 0
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// TestPostgresOutageDuringStart is issue 11's scenario on a real PostgreSQL
// store: the database goes away (every connection cut, new ones refused)
// just as the machine has been created, and comes back; the session still
// becomes ready, with its machine.
func TestPostgresOutageDuringStart(t *testing.T) {
	u, err := url.Parse(pgtest.Shared(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newPGProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	st, err := postgres.Open(t.Context(), u.String(), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	drv := &hookDriver{Driver: fake.New(fake.Config{})}
	drv.onCreate = func() { proxy.takeDown(8) }
	mgr := session.New(session.Config{Replica: "r1", StoreRetry: 10 * time.Millisecond, StartTimeout: time.Minute},
		session.Deps{Store: st, Driver: drv, Providers: testProviders, Vault: &recordingVault{}})
	defer mgr.Close()
	s, err := mgr.Start(t.Context(), "alice", "long")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		got, err := st.Session(ctx, s.ID)
		if err == nil && got.State != mc.StatePending && got.State != mc.StateStarting {
			if got.State != mc.StateReady {
				t.Fatalf("session %s/%s, want ready", got.State, got.Reason)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("session still %v after the outage (%v)", stateOf(got), err)
		case <-time.After(20 * time.Millisecond): // a bounded poll: Watch itself needs the store
		}
	}
}
