package storekit_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

func TestCursor(t *testing.T) {
	const id = "AAAAAAAAAAAAAAAAAAAAAA" // a valid session id: 22 characters
	at := time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.UTC)
	c := storekit.EncodeCursor(at, id)
	gotAt, gotID, err := storekit.DecodeCursor(c)
	if err != nil {
		t.Fatalf("DecodeCursor(%q): %v", c, err)
	}
	if want := at.Truncate(time.Microsecond); !gotAt.Equal(want) || gotAt.Location() != time.UTC || gotID != id {
		t.Fatalf("got %v %q, want %v %q", gotAt, gotID, want, id)
	}

	enc := base64.RawURLEncoding.EncodeToString
	for _, tt := range []struct{ name, cursor string }{
		{"empty", ""},
		{"not base64", "!!!"},
		{"padded", base64.URLEncoding.EncodeToString([]byte("12." + id))},
		{"bad id", storekit.EncodeCursor(at, "s1")},
		{"no separator", enc([]byte("123"))},
		{"negative time", enc([]byte("-1." + id))},
		{"not a number", enc([]byte("xyz." + id))},
		{"not the store's encoding", enc([]byte("001." + id))},
	} {
		if _, _, err := storekit.DecodeCursor(tt.cursor); mc.ErrorReason(err) != "bad_cursor" {
			t.Errorf("%s: DecodeCursor(%q): got %v, want reason bad_cursor", tt.name, tt.cursor, err)
		}
	}
}

func TestPageSize(t *testing.T) {
	for _, tt := range []struct {
		in, want int
		ok       bool
	}{
		{-1, 0, false}, {0, 50, true}, {1, 1, true}, {500, 500, true}, {501, 500, true},
	} {
		got, err := storekit.PageSize(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("PageSize(%d) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
