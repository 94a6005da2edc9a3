package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/postgres"
)

// poolTarget is each replica's demo pool in TestPoolTwoReplicasPostgres:
// smaller than its share of the burst, so that both replicas also miss.
const poolTarget = 20

// TestPoolTwoReplicasPostgres: two server processes share one PostgreSQL
// database and its pool table, each with a warm pool of demo machines (the
// fake driver: a host driver, so each replica claims the machines it
// started). 100 POSTs, half to each, are sent at once. No claim is lost:
// every POST is answered with a session, the store holds the 100 sessions,
// and the replicas' hits and misses add up to 100. No machine is claimed
// twice: every session has a machine of its own, each pooled machine serves
// at most one session and is no longer in the pool, and a replica claimed
// only machines of its own pool.
func TestPoolTwoReplicasPostgres(t *testing.T) {
	const n = 100
	db := pgtest.Shared(t)
	keys := sharedVaultKeys(t)
	const apiKey = "pool-key-0123456789abcdef"
	env := func(replica string) map[string]string {
		return map[string]string{"MC_DATABASE_URL": db, "MC_DRIVER": "fake", "MC_REPLICA": replica, "MC_VAULT_KEYS": keys,
			"MC_DATA_DIR": t.TempDir(), "MC_API_KEYS": apiKey, "MC_POOL": fmt.Sprintf("demo=%d", poolTarget),
			"MC_LOG_LEVEL": "warn", "MC_MAX_MACHINES": "1000"}
	}
	replicas := map[string]*proc{"a": startProcess(t, env("a")), "b": startProcess(t, env("b"))}
	st, err := postgres.Open(t.Context(), db, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for name, p := range replicas {
		waitDemoPool(t, name, p, poolTarget)
	}
	before, err := st.PooledMachines(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	pooledBy := map[string]string{} // pooled machine id → its replica
	for _, p := range before {
		pooledBy[p.ID] = p.Replica
	}

	// The burst: every request waits for the start signal.
	type answer struct {
		replica string
		code    int
		body    []byte
		s       mc.Session
		err     error
	}
	answers := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 60 * time.Second}
	for i := range n {
		name := []string{"a", "b"}[i%2]
		wg.Go(func() {
			<-start
			a := &answers[i]
			a.replica = name
			a.code, a.body, a.err = post(client, replicas[name].URL+"/api/v1/sessions", apiKey,
				map[string]string{"user_id": fmt.Sprintf("pool-user-%d", i), "provider": "demo"})
			var c created
			if a.err == nil && a.code == http.StatusCreated {
				a.err = json.Unmarshal(a.body, &c)
				a.s = c.Session
			}
		})
	}
	close(start)
	wg.Wait()

	hits := map[string]int{}
	sessions := map[string]answer{}
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("POST %d to %s: %v", i, a.replica, a.err)
			continue
		case a.code != http.StatusCreated || a.s.ID == "":
			t.Errorf("POST %d to %s: %d %s; want 201 with a session", i, a.replica, a.code, a.body)
			continue
		}
		if _, dup := sessions[a.s.ID]; dup {
			t.Errorf("session %s answered twice", a.s.ID)
		}
		sessions[a.s.ID] = a
		if a.s.Machine.Pooled {
			hits[a.replica]++
			if a.s.State != mc.StateReady || a.s.Machine.ID == "" {
				t.Errorf("pool hit %s: %s on %+v; want ready on its machine", a.s.ID, a.s.State, a.s.Machine)
			}
			if r, ok := pooledBy[a.s.Machine.ID]; ok && r != a.replica {
				t.Errorf("replica %s claimed machine %s of replica %s's pool", a.replica, a.s.Machine.ID, r)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The store: the 100 sessions, each of the replica it was asked of, each
	// on a machine of its own (cold ones once started); no claimed machine
	// left in the pool.
	machineOf := map[string]string{} // machine id → session id
	for id, a := range sessions {
		s := testutil.WaitSession(t, st, id, 60*time.Second, "a machine", func(s *mc.Session) bool {
			return s.Machine.ID != "" && s.State == mc.StateReady
		})
		if s.Replica != a.replica || s.Machine.Pooled != a.s.Machine.Pooled {
			t.Errorf("session %s: replica %s, pooled %v; the POST to %s answered pooled %v", id, s.Replica,
				s.Machine.Pooled, a.replica, a.s.Machine.Pooled)
		}
		if other, dup := machineOf[s.Machine.ID]; dup {
			t.Errorf("machine %s serves sessions %s and %s", s.Machine.ID, other, id)
		}
		machineOf[s.Machine.ID] = id
	}
	all, _, err := st.Sessions(t.Context(), mc.SessionFilter{Limit: 500})
	if err != nil || len(all) != n {
		t.Errorf("the store holds %d sessions (%v), want %d", len(all), err, n)
	}
	after, err := st.PooledMachines(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after {
		if id, ok := machineOf[p.ID]; ok {
			t.Errorf("pooled machine %s is still in the pool, and serves session %s", p.ID, id)
		}
	}

	// The replicas' counts: each POST is one hit or one miss.
	total := 0.0
	for name, p := range replicas {
		hit := metricValue(t, p.api, `mc_pool_claims_total{provider="demo",result="hit"}`)
		miss := metricValue(t, p.api, `mc_pool_claims_total{provider="demo",result="miss"}`)
		if int(hit) != hits[name] {
			t.Errorf("replica %s counts %v hits; its answers say %d", name, hit, hits[name])
		}
		t.Logf("replica %s: %v hits, %v misses", name, hit, miss)
		total += hit + miss
	}
	if total != n {
		t.Errorf("hits + misses = %v over both replicas, want %d", total, n)
	}
	if hits["a"] == 0 || hits["b"] == 0 || hits["a"]+hits["b"] == n {
		t.Errorf("hits %v: the burst should take every replica's pool and start some cold", hits)
	}
}

// post sends a JSON POST with the API key; safe off the test goroutine.
func post(c *http.Client, url, key string, body any) (int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", url, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// waitDemoPool waits until replica p's demo pool has ready machines and
// none starting.
func waitDemoPool(t *testing.T, name string, p *proc, ready int) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "replica "+name+"'s pool full", func() error {
		var st mc.PoolStatus
		if code := p.api.Do(t, "GET", "/api/v1/pool", nil, &st); code != http.StatusOK {
			return fmt.Errorf("GET /api/v1/pool: %d", code)
		}
		for _, pp := range st.Providers {
			if pp.Provider == "demo" && pp.Ready == ready && pp.Starting == 0 {
				return nil
			}
		}
		return fmt.Errorf("pool %+v", st.Providers)
	})
}
