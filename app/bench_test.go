package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/storetest"
)

// BenchmarkGetSession measures GET /api/v1/sessions/{id} over loopback HTTP
// through the whole server (auth, routing, logging, metrics, store) on each
// store, with a keep-alive client as a backend would use.
func BenchmarkGetSession(b *testing.B) {
	for _, store := range []string{"sqlite", "postgres"} {
		b.Run(store, func(b *testing.B) {
			env := map[string]string{"MC_LOG_LEVEL": "warn"}
			if store == "postgres" {
				env["MC_DATABASE_URL"] = pgtest.Shared(b)
			}
			tm := startMain(b, env)
			var c created
			if code := tm.api.Do(b, "POST", "/api/v1/sessions", map[string]string{"user_id": "bench", "provider": "demo"}, &c); code != 201 {
				b.Fatalf("create: %d", code)
			}
			url := tm.URL + "/api/v1/sessions/" + c.Session.ID
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			get := func() error {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+tm.api.Key)
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			b.Run("serial", func(b *testing.B) {
				for b.Loop() {
					if err := get(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := get(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkCreateSession measures POST /api/v1/sessions over loopback HTTP
// through the whole server with 0, 1 000 and 10 000 live sessions already
// in the store (of another replica, so that reconcile leaves them be). The
// capacity check reads one counter, so the figures stay flat (issue 11,
// item 8). The fake machines take an hour to start: the benchmark measures
// the POST, not the machines.
func BenchmarkCreateSession(b *testing.B) {
	for _, store := range []string{"sqlite", "postgres"} {
		for _, live := range []int{0, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/sessions=%d", store, live), func(b *testing.B) {
				env := map[string]string{"MC_LOG_LEVEL": "warn", "MC_MAX_MACHINES": "1000000", "MC_FAKE_START_DELAY": "1h"}
				if store == "postgres" {
					env["MC_DATABASE_URL"] = pgtest.Shared(b)
				}
				tm := startMain(b, env)
				preload(b, tm.Store, live)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
				i := 0
				for b.Loop() {
					i++
					body := fmt.Sprintf(`{"user_id":"bench-%d","provider":"demo"}`, i)
					req, _ := http.NewRequest("POST", tm.URL+"/api/v1/sessions", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tm.api.Key)
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						b.Fatalf("create: status %d", resp.StatusCode)
					}
				}
			})
		}
	}
}

// preload creates n live sessions of replica "other" in the store, eight at
// a time.
func preload(b *testing.B, st mc.Store, n int) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				s := storetest.NewSession(fmt.Sprint("live-", i), "demo", time.Time{})
				if err := st.CreateSession(context.Background(), s, "other", mc.Capacity{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("preload: %v", err)
	}
}
