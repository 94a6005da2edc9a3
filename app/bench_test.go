package app_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/master-controller/mc/internal/pgtest"
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
