package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
)

// FuzzCreateSession sends arbitrary bodies to both start endpoints: the
// answer is a session (201/200), a refusal with a documented 4xx code, or a
// conflict; never a 500.
func FuzzCreateSession(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"alice","provider":"demo"}`,
		`{"userId":"alice","provider":"demo"}`,
		`{"user_id":"a","provider":"demo"}{}`,
		`{"user_id":1}`, `[]`, `null`, `""`, `{`, "\x00", `{"user_id":"\ud800","provider":"demo"}`,
	} {
		f.Add(s, "application/json")
	}
	store := newFakeStore()
	api, err := httpapi.New(httpapi.Config{APIKeys: []httpapi.KeyHash{httpapi.HashAPIKey(testAPIKey)}, MaxBodyBytes: 1 << 10},
		httpapi.Deps{Sessions: &fakeSessions{store: store}, Store: store, Tokens: &fakeTokens{}, Providers: testProviders}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body, contentType string) {
		for _, path := range []string{"/api/v1/sessions", "/api/auth/start"} {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			req.Header.Set("Content-Type", contentType)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK, http.StatusCreated, http.StatusConflict:
			case http.StatusBadRequest:
				if d := decodeError(t, rec.Body.Bytes()); d.Code != mc.EINVALID || d.Reason == "" {
					t.Errorf("%s %q: got %+v, want invalid with a reason", path, body, d)
				}
			default:
				t.Errorf("%s %q (%q): got status %d: %s", path, body, contentType, rec.Code, rec.Body)
			}
		}
	})
}
