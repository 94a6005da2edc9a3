package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	mc "github.com/master-controller/mc"
	"github.com/prometheus/client_golang/prometheus"
)

// Audit actions, as they appear in mc.AuditEntry.Action.
const (
	ActionRead   = "read"
	ActionList   = "list"
	ActionDelete = "delete"
	ActionRotate = "rotate"
)

// ActorSystem is the audit actor of operations that no API key asked for
// (key rotation).
const ActorSystem = "system"

// OutcomeOK is the audit outcome of a successful operation; a failed one
// records its error code.
const OutcomeOK = "ok"

// Options are the Service's optional dependencies.
type Options struct {
	// Clock stamps audit entries; mc.SystemClock when nil.
	Clock mc.Clock
	// Logger receives rotation progress and failures; slog.Default when nil.
	Logger *slog.Logger
	// Registerer receives mc_vault_operations_total{op,outcome}; no metrics
	// when nil. NewService panics if they are already registered there.
	Registerer prometheus.Registerer
}

// Service keeps sealed credentials in an mc.CredentialStore. Reads, lists
// and deletes are appended to the store's audit log, with their outcome,
// before the result is returned; a read that cannot be audited fails.
type Service struct {
	vault *Vault
	store mc.CredentialStore
	clock mc.Clock
	log   *slog.Logger
	ops   *prometheus.CounterVec
}

// NewService returns a service that seals with v and stores in store.
func NewService(v *Vault, store mc.CredentialStore, o Options) *Service {
	s := &Service{vault: v, store: store, clock: o.Clock, log: o.Logger}
	if s.clock == nil {
		s.clock = mc.SystemClock{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_vault_operations_total",
		Help: "Vault operations by operation (put, read, list, delete, rotate) and outcome (ok or an error code).",
	}, []string{"op", "outcome"})
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.ops)
	}
	return s
}

// Vault returns the service's vault.
func (s *Service) Vault() *Vault { return s.vault }

// Put seals c and stores it, replacing the user's earlier record for the
// provider.
// Errors: EINVALID (reason "invalid_credential"), EINTERNAL.
func (s *Service) Put(ctx context.Context, c mc.Credential) error {
	err := s.put(ctx, c)
	s.count("put", err)
	return err
}

func (s *Service) put(ctx context.Context, c mc.Credential) error {
	sealed, err := s.vault.Seal(c)
	if err != nil {
		return err
	}
	if err := s.store.PutCredential(ctx, sealed); err != nil {
		return fmt.Errorf("store credential of user %q provider %q: %w", c.UserID, c.Provider, err)
	}
	return nil
}

// Get opens the user's credential for provider on behalf of actor (an API
// key id) and audits the read, whatever its outcome.
// Errors: EINVALID (reason "invalid_request"); ENOTFOUND; EINTERNAL (reason
// "vault_open_failed" or "audit_failed").
func (s *Service) Get(ctx context.Context, userID, provider, actor string) (mc.Credential, error) {
	if err := checkRequest(userID, provider, actor, true); err != nil {
		s.count(ActionRead, err)
		return mc.Credential{}, err
	}
	c, err := s.get(ctx, userID, provider)
	err = s.audit(ctx, ActionRead, actor, userID, provider, err)
	s.count(ActionRead, err)
	if err != nil {
		return mc.Credential{}, err
	}
	return c, nil
}

func (s *Service) get(ctx context.Context, userID, provider string) (mc.Credential, error) {
	sealed, err := s.store.Credential(ctx, userID, provider)
	if err != nil {
		return mc.Credential{}, fmt.Errorf("get credential of user %q provider %q: %w", userID, provider, err)
	}
	return s.vault.Open(sealed)
}

// List returns which providers the user has credentials for, and when they
// were captured, on behalf of actor, and audits it. The records carry no
// nonce and no ciphertext.
// Errors: EINVALID (reason "invalid_request"); EINTERNAL.
func (s *Service) List(ctx context.Context, userID, actor string) ([]mc.SealedCredential, error) {
	if err := checkRequest(userID, "", actor, false); err != nil {
		s.count(ActionList, err)
		return nil, err
	}
	recs, err := s.store.Credentials(ctx, userID)
	if err != nil {
		err = fmt.Errorf("list credentials of user %q: %w", userID, err)
	}
	err = s.audit(ctx, ActionList, actor, userID, "", err)
	s.count(ActionList, err)
	if err != nil {
		return nil, err
	}
	out := make([]mc.SealedCredential, len(recs))
	for i, r := range recs {
		r.Nonce, r.Ciphertext = nil, nil
		out[i] = r
	}
	return out, nil
}

// Delete removes the user's credential for provider on behalf of actor and
// audits it.
// Errors: EINVALID (reason "invalid_request"); ENOTFOUND; EINTERNAL.
func (s *Service) Delete(ctx context.Context, userID, provider, actor string) error {
	if err := checkRequest(userID, provider, actor, true); err != nil {
		s.count(ActionDelete, err)
		return err
	}
	err := s.store.DeleteCredential(ctx, userID, provider)
	if err != nil {
		err = fmt.Errorf("delete credential of user %q provider %q: %w", userID, provider, err)
	}
	err = s.audit(ctx, ActionDelete, actor, userID, provider, err)
	s.count(ActionDelete, err)
	return err
}

// Rotate re-seals every record that is not sealed under the primary key,
// each with a new nonce, and audits each one (actor "system"). It returns how
// many it re-sealed. A record that cannot be opened is left as it is and
// reported in the error; the others are still re-sealed, so that running
// Rotate again after fixing the keyring finishes the job. A record replaced
// or deleted by a new login while Rotate runs is left to that login: the
// store offers no compare-and-set, so Rotate re-reads each record just before
// writing it, which narrows the race to that one step.
// Errors: EINTERNAL, joined for every record that failed.
func (s *Service) Rotate(ctx context.Context) (int, error) {
	recs, err := s.store.Credentials(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("list credentials for rotation: %w", err)
	}
	primary := s.vault.keys.Primary()
	n := 0
	var errs []error
	for _, r := range recs {
		if r.KeyID == primary {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		done, err := s.rotateOne(ctx, r)
		if done {
			n++
		}
		if err != nil {
			s.log.Error("vault rotate record", mc.LogUserID, r.UserID, mc.LogProvider, r.Provider,
				"key_id", r.KeyID, mc.LogReason, mc.ErrorReason(err), mc.LogError, err)
			errs = append(errs, err)
		}
		if done || err != nil {
			s.count(ActionRotate, err)
		}
	}
	s.log.Info("vault rotate finished", "key_id", primary, "resealed", n, "failed", len(errs))
	return n, errors.Join(errs...)
}

// rotateOne re-seals one record; done reports that it did.
func (s *Service) rotateOne(ctx context.Context, r mc.SealedCredential) (done bool, err error) {
	c, err := s.vault.Open(r)
	if err != nil {
		return false, err
	}
	sealed, err := s.vault.Seal(c)
	if err != nil {
		return false, err
	}
	cur, err := s.store.Credential(ctx, r.UserID, r.Provider)
	switch {
	case mc.ErrorCode(err) == mc.ENOTFOUND:
		return false, nil // deleted meanwhile
	case err != nil:
		return false, fmt.Errorf("reread credential of user %q provider %q: %w", r.UserID, r.Provider, err)
	case cur.KeyID != r.KeyID || !bytes.Equal(cur.Nonce, r.Nonce):
		return false, nil // replaced by a newer login meanwhile
	}
	if err := s.store.PutCredential(ctx, sealed); err != nil {
		return false, fmt.Errorf("store resealed credential of user %q provider %q: %w", r.UserID, r.Provider, err)
	}
	return true, s.audit(ctx, ActionRotate, ActorSystem, r.UserID, r.Provider, nil)
}

// audit appends the entry for an operation whose result was opErr and
// returns opErr, or an audit_failed error when the entry cannot be written.
func (s *Service) audit(ctx context.Context, action, actor, userID, provider string, opErr error) error {
	outcome := OutcomeOK
	if opErr != nil {
		outcome = string(mc.ErrorCode(opErr))
	}
	e := mc.AuditEntry{At: s.clock.Now().UTC(), Actor: actor, Action: action, UserID: userID, Provider: provider, Outcome: outcome}
	// The entry is written even if the caller has gone: the read happened.
	if err := s.store.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		return &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonAuditFailed, Message: "the audit log could not be written",
			Err: fmt.Errorf("append audit %s of user %q provider %q: %w", action, userID, provider, errors.Join(err, opErr))}
	}
	return opErr
}

func (s *Service) count(op string, err error) {
	outcome := OutcomeOK
	if err != nil {
		outcome = string(mc.ErrorCode(err))
	}
	s.ops.WithLabelValues(op, outcome).Inc()
}

// maxField bounds user ids, provider names and actors.
const maxField = 256

func checkRequest(userID, provider, actor string, needProvider bool) error {
	switch {
	case userID == "" || len(userID) > maxField:
		return mc.Errorf(mc.EINVALID, mc.ReasonInvalidRequest, "user_id must be 1 to %d bytes", maxField)
	case needProvider && (provider == "" || len(provider) > maxField):
		return mc.Errorf(mc.EINVALID, mc.ReasonInvalidRequest, "provider must be 1 to %d bytes", maxField)
	case actor == "" || len(actor) > maxField:
		return mc.Errorf(mc.EINVALID, mc.ReasonInvalidRequest, "an actor (API key id) is required for the audit log")
	}
	return nil
}
