package postgres

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/sqlstore"
)

// TestClassify: PostgreSQL's error codes become the domain's reasons; a
// full disk (53100) is store_full, not store_busy nor internal (issue 11,
// item 3).
func TestClassify(t *testing.T) {
	tests := []struct {
		code   string
		reason mc.Reason
	}{
		{"53100", "store_full"},  // disk_full
		{"53200", "store_busy"},  // out_of_memory
		{"53300", "store_busy"},  // too_many_connections
		{"40001", "store_busy"},  // serialization_failure
		{"40P01", "store_busy"},  // deadlock_detected
		{"57P01", "store_busy"},  // admin_shutdown
		{"08006", "store_busy"},  // connection_failure
		{"23505", "store_error"}, // unique_violation: a bug if it gets here
		{"42P01", "store_error"}, // undefined_table
	}
	for _, tt := range tests {
		err := fmt.Errorf("insert: %w", &pgconn.PgError{Code: tt.code, Message: "x"})
		got := sqlstore.MapErr(classify, err, "create session %s", "s1")
		if r := mc.ErrorReason(got); r != tt.reason {
			t.Errorf("%s: got reason %s, want %s", tt.code, r, tt.reason)
		}
		if tt.reason == "store_full" || tt.reason == "store_busy" {
			var e *mc.Error
			if !errors.As(got, &e) || e.Code != mc.EUNAVAILABLE || e.RetryAfter <= 0 {
				t.Errorf("%s: got %v, want unavailable with RetryAfter", tt.code, got)
			}
		}
	}
}

// TestClassifyCutConnection: a query whose connection the server dropped
// (PostgreSQL restarted under it) is store_unreachable, a 503, not an
// internal error (found by the soak test, bench/cmd/soak).
func TestClassifyCutConnection(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("get session s1: %w", io.ErrUnexpectedEOF),
		fmt.Errorf("failed to deallocate cached statement(s): %w", io.ErrUnexpectedEOF),
		fmt.Errorf("read: %w", io.EOF),
	} {
		got := sqlstore.MapErr(classify, err, "get session %s", "s1")
		if r := mc.ErrorReason(got); r != "store_unreachable" {
			t.Errorf("%v: got reason %s, want store_unreachable", err, r)
		}
	}
}
