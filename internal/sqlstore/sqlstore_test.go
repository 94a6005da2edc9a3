package sqlstore

import (
	"testing"
	"time"
)

func TestPlaceholders(t *testing.T) {
	tests := []struct {
		numbered bool
		in, want string
	}{
		{false, `SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = ? AND c = ?`},
		{true, `SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`},
		{true, `SELECT 1`, `SELECT 1`},
		{true, `INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, `INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`},
	}
	for _, tt := range tests {
		s := &Store{d: Dialect{Numbered: tt.numbered}}
		for range 2 { // the second answer comes from the cache
			if got := s.q(tt.in); got != tt.want {
				t.Errorf("q(%q) numbered=%v: got %q, want %q", tt.in, tt.numbered, got, tt.want)
			}
		}
	}
}

func TestTimeEncodings(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 123456789, time.FixedZone("x", 3600))
	want := at.UTC().Truncate(time.Microsecond)
	for name, enc := range map[string]func(time.Time) any{"micros": MicrosTime, "native": NativeTime} {
		if v := enc(time.Time{}); v != nil {
			t.Errorf("%s: the zero time encodes as %v, want NULL", name, v)
		}
		var got time.Time
		if err := (timeOf{&got}).Scan(enc(at)); err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%s: got %v, %v, want %v UTC", name, got, err, want)
		}
	}
	got := time.Now()
	if err := (timeOf{&got}).Scan(nil); err != nil || !got.IsZero() {
		t.Errorf("NULL: got %v, %v, want the zero time", got, err)
	}
	if err := (timeOf{&got}).Scan("yesterday"); err == nil {
		t.Error("a string scanned as a time, want an error")
	}
}
