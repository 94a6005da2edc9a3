package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	mc "github.com/master-controller/mc"
	mctest "github.com/master-controller/mc/internal/testutil"
)

var testNow = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// failingAudit is a store whose audit log cannot be written.
type failingAudit struct{ mc.CredentialStore }

func (failingAudit) AppendAudit(context.Context, mc.AuditEntry) error {
	return errors.New("disk full")
}

func newService(tb testing.TB, store mc.CredentialStore, kr *Keyring) (*Service, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tb.Cleanup(func() {
		if strings.Contains(logs.String(), demoSecret) {
			tb.Errorf("the log holds a credential's secret:\n%s", logs.String())
		}
	})
	return NewService(New(kr), store, Options{Clock: mctest.NewClock(testNow), Logger: log, Registerer: reg}), reg
}

func audit(tb testing.TB, store mc.CredentialStore) []mc.AuditEntry {
	tb.Helper()
	es, err := store.Audit(context.Background(), mc.AuditFilter{Limit: 500})
	if err != nil {
		tb.Fatalf("Audit: %v", err)
	}
	return es
}

// checkAudit compares the newest entry of the audit log with want (ID ignored).
func checkAudit(tb testing.TB, store mc.CredentialStore, want mc.AuditEntry) {
	tb.Helper()
	es := audit(tb, store)
	if len(es) == 0 {
		tb.Fatalf("audit log is empty, want %+v", want)
	}
	got := es[0]
	got.ID = 0
	if !got.At.Equal(want.At) {
		tb.Errorf("got audit time %v, want %v", got.At, want.At)
	}
	got.At, want.At = time.Time{}, time.Time{}
	if got != want {
		tb.Errorf("got audit entry %+v, want %+v", got, want)
	}
}

func TestServicePutGet(t *testing.T) {
	store := newTestStore(t)
	svc, reg := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	in := testCredential("alice", "demo")
	if err := svc.Put(t.Context(), in); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := svc.Get(t.Context(), "alice", "demo", "key-1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !maps.Equal(got.Files, in.Files) || got.SessionID != in.SessionID {
		t.Errorf("got %+v, want %+v", got, in)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-1", Action: ActionRead, UserID: "alice", Provider: "demo", Outcome: OutcomeOK})

	// A newer login replaces the record.
	newer := testCredential("alice", "demo")
	newer.Files = map[string]string{"~/.demo/credentials.json": `{"access_token":"newer"}`}
	if err := svc.Put(t.Context(), newer); err != nil {
		t.Fatalf("Put newer: %v", err)
	}
	got, err = svc.Get(t.Context(), "alice", "demo", "key-1")
	if err != nil {
		t.Fatalf("Get newer: %v", err)
	}
	if !maps.Equal(got.Files, newer.Files) {
		t.Errorf("got files %v, want %v", got.Files, newer.Files)
	}

	if got := testutil.ToFloat64(svc.ops.WithLabelValues(ActionRead, OutcomeOK)); got != 2 {
		t.Errorf("got %v ok reads counted, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "mc_vault_operations_total"); err != nil || n == 0 {
		t.Errorf("got %d series of mc_vault_operations_total (err %v), want some", n, err)
	}
}

func TestServiceGetMissingIsAudited(t *testing.T) {
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	_, err := svc.Get(t.Context(), "alice", "codex", "key-1")
	if got := mc.ErrorCode(err); got != mc.ENOTFOUND {
		t.Fatalf("got %v, want code %q", err, mc.ENOTFOUND)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-1", Action: ActionRead, UserID: "alice", Provider: "codex", Outcome: string(mc.ENOTFOUND)})
}

func TestServiceGetUnopenableIsAudited(t *testing.T) {
	store := newTestStore(t)
	a, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	if err := a.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	b, _ := newService(t, store, mustKeys(t, "b:"+newKeyB64(t)))
	_, err := b.Get(t.Context(), "alice", "demo", "key-1")
	if got := mc.ErrorReason(err); got != mc.ReasonVaultOpenFailed {
		t.Fatalf("got %v, want reason %q", err, mc.ReasonVaultOpenFailed)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-1", Action: ActionRead, UserID: "alice", Provider: "demo", Outcome: string(mc.EINTERNAL)})
}

func TestServiceAuditFailureFailsRead(t *testing.T) {
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	if err := svc.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	broken, _ := newService(t, failingAudit{store}, svc.Vault().Keys())
	got, err := broken.Get(t.Context(), "alice", "demo", "key-1")
	if mc.ErrorReason(err) != mc.ReasonAuditFailed {
		t.Fatalf("got %v, want reason %q", err, mc.ReasonAuditFailed)
	}
	if got.Files != nil {
		t.Errorf("got files %v with an unaudited read, want none", got.Files)
	}
	if err := broken.Delete(t.Context(), "alice", "demo", "key-1"); mc.ErrorReason(err) != mc.ReasonAuditFailed {
		t.Errorf("delete: got %v, want reason %q", err, mc.ReasonAuditFailed)
	}
}

func TestServiceList(t *testing.T) {
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	for _, c := range []mc.Credential{testCredential("alice", "demo"), testCredential("alice", "codex"), testCredential("bob", "demo")} {
		if err := svc.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := svc.List(t.Context(), "alice", "key-1")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var providers []string
	for _, r := range recs {
		providers = append(providers, r.Provider)
		if r.UserID != "alice" || r.Nonce != nil || r.Ciphertext != nil || r.CapturedAt.IsZero() {
			t.Errorf("got record %+v, want alice's, with a capture time, without nonce or ciphertext", r)
		}
	}
	if got, want := strings.Join(providers, ","), "codex,demo"; got != want {
		t.Errorf("got providers %s, want %s", got, want)
	}
	b, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), demoSecret) || strings.Contains(string(b), "ciphertext") {
		t.Errorf("list JSON %s holds secret material", b)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-1", Action: ActionList, UserID: "alice", Outcome: OutcomeOK})

	none, err := svc.List(t.Context(), "carol", "key-1")
	if err != nil || len(none) != 0 {
		t.Errorf("got %v, %v for a user without credentials, want none", none, err)
	}
}

func TestServiceDelete(t *testing.T) {
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	if err := svc.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(t.Context(), "alice", "demo", "key-2"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-2", Action: ActionDelete, UserID: "alice", Provider: "demo", Outcome: OutcomeOK})
	if _, err := svc.Get(t.Context(), "alice", "demo", "key-2"); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("get after delete: got %v, want code %q", err, mc.ENOTFOUND)
	}
	if err := svc.Delete(t.Context(), "alice", "demo", "key-2"); mc.ErrorCode(err) != mc.ENOTFOUND {
		t.Errorf("delete again: got %v, want code %q", err, mc.ENOTFOUND)
	}
	checkAudit(t, store, mc.AuditEntry{At: testNow, Actor: "key-2", Action: ActionDelete, UserID: "alice", Provider: "demo", Outcome: string(mc.ENOTFOUND)})
}

func TestServiceInvalidRequests(t *testing.T) {
	store := newTestStore(t)
	svc, _ := newService(t, store, mustKeys(t, "a:"+newKeyB64(t)))
	long := strings.Repeat("x", 257)
	tests := []struct {
		name string
		call func() error
	}{
		{"get without user", func() error { _, err := svc.Get(t.Context(), "", "demo", "k"); return err }},
		{"get without provider", func() error { _, err := svc.Get(t.Context(), "u", "", "k"); return err }},
		{"get without actor", func() error { _, err := svc.Get(t.Context(), "u", "demo", ""); return err }},
		{"get with a huge user id", func() error { _, err := svc.Get(t.Context(), long, "demo", "k"); return err }},
		{"list without user", func() error { _, err := svc.List(t.Context(), "", "k"); return err }},
		{"delete without actor", func() error { return svc.Delete(t.Context(), "u", "demo", "") }},
		{"put without files", func() error { return svc.Put(t.Context(), mc.Credential{UserID: "u", Provider: "demo"}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); mc.ErrorCode(err) != mc.EINVALID {
				t.Errorf("got %v, want code %q", err, mc.EINVALID)
			}
		})
	}
}

// TestRotate: seal under key A, add key B (first), rotate, remove A, read
// everything back.
func TestRotate(t *testing.T) {
	store := newTestStore(t)
	keyA, keyB := newKeyB64(t), newKeyB64(t)
	svcA, _ := newService(t, store, mustKeys(t, "a:"+keyA))
	want := map[[2]string]mc.Credential{}
	for _, u := range []string{"alice", "bob", "carol"} {
		for _, p := range []string{"demo", "codex"} {
			c := testCredential(u, p)
			c.Files["~/.owner"] = u + "/" + p
			if err := svcA.Put(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			want[[2]string{u, p}] = c
		}
	}

	// B alone cannot open A's records.
	onlyB, _ := newService(t, store, mustKeys(t, "b:"+keyB))
	if _, err := onlyB.Get(t.Context(), "alice", "demo", "op"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("B alone before rotation: got %v, want %v", err, ErrUnknownKey)
	}

	// Add B first, as MC_VAULT_KEYS="b:…,a:…" would, and rotate.
	svcBA, _ := newService(t, store, mustKeys(t, "b:"+keyB+",a:"+keyA))
	n, err := svcBA.Rotate(t.Context())
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if got := n; got != len(want) {
		t.Errorf("got %d resealed, want %d", got, len(want))
	}
	recs, err := store.Credentials(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.KeyID != "b" {
			t.Errorf("record %s/%s still under key %q after rotation", r.UserID, r.Provider, r.KeyID)
		}
	}
	var rotations int
	for _, e := range audit(t, store) {
		if e.Action == ActionRotate && e.Actor == ActorSystem && e.Outcome == OutcomeOK {
			rotations++
		}
	}
	if rotations != len(want) {
		t.Errorf("got %d rotate audit entries, want %d", rotations, len(want))
	}

	// Rotating again has nothing to do.
	if n, err := svcBA.Rotate(t.Context()); n != 0 || err != nil {
		t.Errorf("second rotation: got %d, %v, want 0, nil", n, err)
	}

	// Remove A: everything still opens, with its content intact.
	for k, c := range want {
		got, err := onlyB.Get(t.Context(), k[0], k[1], "op")
		if err != nil {
			t.Fatalf("get %v with B only after rotation: %v", k, err)
		}
		if !maps.Equal(got.Files, c.Files) || got.SessionID != c.SessionID || !got.CapturedAt.Equal(c.CapturedAt) {
			t.Errorf("got %+v, want %+v", got, c)
		}
	}
}

func TestRotateKeepsGoingPastAnUnopenableRecord(t *testing.T) {
	store := newTestStore(t)
	keyA := newKeyB64(t)
	svcX, _ := newService(t, store, mustKeys(t, "x:"+newKeyB64(t)))
	if err := svcX.Put(t.Context(), testCredential("alice", "demo")); err != nil {
		t.Fatal(err)
	}
	svcA, _ := newService(t, store, mustKeys(t, "a:"+keyA))
	if err := svcA.Put(t.Context(), testCredential("bob", "demo")); err != nil {
		t.Fatal(err)
	}

	// B and A are configured, x (alice's key) is lost.
	svc, _ := newService(t, store, mustKeys(t, "b:"+newKeyB64(t)+",a:"+keyA))
	n, err := svc.Rotate(t.Context())
	if n != 1 {
		t.Errorf("got %d resealed, want 1 (bob's)", n)
	}
	if !errors.Is(err, ErrUnknownKey) || mc.ErrorReason(err) != mc.ReasonVaultOpenFailed {
		t.Errorf("got %v, want a vault_open_failed error for alice's record", err)
	}
	r, err := store.Credential(t.Context(), "alice", "demo")
	if err != nil || r.KeyID != "x" {
		t.Errorf("alice's record: got key %q, %v, want it left under %q", r.KeyID, err, "x")
	}
}
