// Package httprec records what an http.Handler writes, for code that runs a
// handler in process and answers with the result some other way (the API's
// mux fallbacks, the agent's local pages served over DevTools).
package httprec

import (
	"bytes"
	"net/http"
)

// Recorder is an http.ResponseWriter that keeps the response. The zero
// value is ready to use.
type Recorder struct {
	header http.Header
	// Status is the first status written: WriteHeader's, or 200 at the
	// first Write; 0 while nothing is written.
	Status int
	// Body is everything written.
	Body bytes.Buffer
}

// Header is the response's header map.
func (r *Recorder) Header() http.Header {
	if r.header == nil {
		r.header = http.Header{}
	}
	return r.header
}

// WriteHeader records code unless a status is recorded already.
func (r *Recorder) WriteHeader(code int) {
	if r.Status == 0 {
		r.Status = code
	}
}

// Write appends b to the body (and records 200 if no status is).
func (r *Recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.Body.Write(b)
}
