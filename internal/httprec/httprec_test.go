package httprec_test

import (
	"net/http"
	"testing"

	"github.com/master-controller/mc/internal/httprec"
)

func TestRecorder(t *testing.T) {
	var r httprec.Recorder
	r.Header().Set("Allow", "GET")
	_, _ = r.Write([]byte("a"))
	r.WriteHeader(http.StatusTeapot) // too late: the first write said 200
	_, _ = r.Write([]byte("b"))
	if r.Status != http.StatusOK || r.Body.String() != "ab" || r.Header().Get("Allow") != "GET" {
		t.Errorf("got %d %q %v, want 200 \"ab\" Allow: GET", r.Status, r.Body.String(), r.Header())
	}
	var s httprec.Recorder
	s.WriteHeader(http.StatusMethodNotAllowed)
	_, _ = s.Write([]byte("x"))
	if s.Status != http.StatusMethodNotAllowed {
		t.Errorf("got %d, want the first status written, 405", s.Status)
	}
}
