package mc

import (
	"context"
	"time"
)

// Store is the only source of truth. Any replica serves any session because
// nothing about a session lives only in one process's memory. Both sqlite.Store
// and postgres.Store implement it and pass storetest.
type Store interface {
	SessionStore
	LeaseStore
	CredentialStore
	PoolStore
	ReplicaStore
	// Ping checks that the store is reachable (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// SessionStore keeps sessions and their event logs.
type SessionStore interface {
	// CreateSession inserts s (state pending, version 1) and its first event,
	// and takes a slot of capacity c for it, all in one transaction: when it
	// returns nil the session is within capacity on every replica at once.
	// s.ID, UserID, Provider, CreatedAt and ExpiresAt must be set; the store
	// sets State (pending), Replica (from replica), UpdatedAt and ActiveAt
	// (= CreatedAt) and Version (1). The slot is freed
	// when the session reaches a final state.
	// Errors: ECONFLICT (reason "active_session", SessionID set to the existing
	// session's id) when the user already has an active session for the
	// provider, whether or not there is capacity; EUNAVAILABLE (reason
	// "capacity", with RetryAfter) when c is full; EINVALID for a malformed
	// session.
	CreateSession(ctx context.Context, s *Session, replica string, c Capacity) error

	// CountActive returns the number of live (non-final) sessions: of every
	// replica for "", else of the sessions created by replica. It reads one
	// counter that CreateSession and Transition keep, whatever the number of
	// sessions.
	CountActive(ctx context.Context, replica string) (int, error)

	// Session returns the session with the given id.
	// Errors: ENOTFOUND.
	Session(ctx context.Context, id string) (*Session, error)

	// Sessions returns one page of sessions, newest first, and the cursor of
	// the next page ("" on the last page).
	// Errors: EINVALID (reason "bad_cursor") for a cursor the store did not make.
	Sessions(ctx context.Context, f SessionFilter) ([]*Session, string, error)

	// Transition moves a session from t.From to t.To if, and only if, it is
	// still in t.From at version t.Version (compare-and-set), appends the
	// event, publishes the change to watchers and returns the new session.
	// It sets UpdatedAt = t.At, ReadyAt = t.At when t.To is ready, EndedAt =
	// t.At when t.To is final, Reason = t.Reason, and Version + 1.
	// Errors: ENOTFOUND; ECONFLICT (reason "stale") when the state or version
	// changed; EINVALID (reason "bad_transition") when the state machine
	// forbids it.
	Transition(ctx context.Context, t Transition) (*Session, error)

	// SetMachine records the machine of a live session (compare-and-set on
	// version like Transition, but the state stays) and publishes the change.
	// Errors: ENOTFOUND, ECONFLICT ("stale").
	SetMachine(ctx context.Context, id string, version int64, m Machine) (*Session, error)

	// Touch records activity at the given time (monotonic: an older time is
	// ignored). It does not change Version or publish.
	// Errors: ENOTFOUND.
	Touch(ctx context.Context, id string, at time.Time) error

	// ClaimViewer records viewer as the session's current viewer and publishes
	// the change without changing Version, so that a viewer on any replica
	// learns that it has been taken over.
	// Errors: ENOTFOUND.
	ClaimViewer(ctx context.Context, id, viewer string) (*Session, error)

	// SetLogin records the login progress of a live session without
	// changing Version, appends an event (state unchanged, reason
	// login_progress, message "phase url") and publishes the change.
	// Errors: ENOTFOUND; ECONFLICT (reason "stale") when the session is final.
	SetLogin(ctx context.Context, id string, p LoginProgress, replica string) (*Session, error)

	// Events returns a session's event log, oldest first.
	// Errors: ENOTFOUND.
	Events(ctx context.Context, id string) ([]Event, error)

	// Watch returns a channel that first receives the session as it is now and
	// then the session after each change, from any replica, within
	// milliseconds. The channel holds only the newest value (a slow reader
	// skips to the latest, never a stale queue); it is closed after a final
	// state has been delivered or when ctx ends.
	// Errors: ENOTFOUND.
	Watch(ctx context.Context, id string) (<-chan *Session, error)
}

// Capacity bounds the live sessions that CreateSession may leave. The zero
// value bounds nothing.
type Capacity struct {
	// Max is the most live sessions, the new one included (0: no bound).
	Max int
	// PerReplica counts only the live sessions created by the same replica:
	// a host driver's machines run on the replica's own host. Otherwise
	// every replica's sessions count, as for a cluster driver whose machines
	// share one cluster.
	PerReplica bool
}

// SessionFilter selects sessions for listing. Zero fields do not filter.
type SessionFilter struct {
	UserID   string
	Provider string
	State    State
	// Active selects only sessions in non-final states.
	Active bool
	// Replica selects the sessions driven by one replica.
	Replica string
	// Limit is the page size; the store caps it at 500 and uses 50 for 0.
	Limit  int
	Cursor string
}

// Transition is a compare-and-set change of state.
type Transition struct {
	ID      string
	From    State
	Version int64
	To      State
	Reason  Reason
	Message string
	Replica string
	At      time.Time
	// Machine, when non-nil, is recorded with the transition.
	Machine *Machine
}

// LeaseStore hands out numbered resources (an IP's host part, a port) from
// named pools, one transaction each, with a uniqueness constraint on
// (pool, value) so that two replicas never hand out one value.
type LeaseStore interface {
	// Lease takes the lowest free value in [lo, hi] of the pool for owner (a
	// session id). Leasing again for the same owner and pool returns the value
	// it already holds.
	// Errors: EUNAVAILABLE (reason "pool_exhausted").
	Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error)
	// Release frees every lease of owner in the pool; releasing nothing is fine.
	Release(ctx context.Context, pool, owner string) error
	// Leases lists the leases of a pool ("" for every pool).
	Leases(ctx context.Context, pool string) ([]Lease, error)
	// ReclaimLeases frees leases whose owner is a final session or no session
	// at all (and no pooled machine), but never those of the owners in keep,
	// and returns them. keep names what a driver still has on the host (its
	// machines and their sessions): a machine that is being torn down still
	// holds its address and uid until its Destroy releases them, and a lease
	// freed before then hands them to a new machine beside it.
	ReclaimLeases(ctx context.Context, keep []string) ([]Lease, error)
}

// Lease is one value held by one owner.
type Lease struct {
	Pool  string    `json:"pool"`
	Value int       `json:"value"`
	Owner string    `json:"owner"`
	At    time.Time `json:"at"`
}

// CredentialStore keeps sealed credentials and the audit log. It never sees
// plaintext: sealing and opening are the vault's.
type CredentialStore interface {
	// PutCredential inserts or replaces the record of (UserID, Provider).
	PutCredential(ctx context.Context, c SealedCredential) error
	// Credential returns the record of (user, provider).
	// Errors: ENOTFOUND.
	Credential(ctx context.Context, userID, provider string) (SealedCredential, error)
	// Credentials lists a user's records ("" for every user), ordered by
	// user then provider.
	Credentials(ctx context.Context, userID string) ([]SealedCredential, error)
	// DeleteCredential removes the record of (user, provider).
	// Errors: ENOTFOUND.
	DeleteCredential(ctx context.Context, userID, provider string) error
	// AppendAudit appends an entry to the audit log.
	AppendAudit(ctx context.Context, e AuditEntry) error
	// Audit returns audit entries, newest first, at most limit (50 for 0).
	Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// ReplicaState is where a controller replica is in its life.
type ReplicaState string

// The states of a replica. A replica that stopped heartbeating is neither:
// its row says running, its heartbeat is stale.
const (
	// ReplicaRunning: the replica drives its sessions and heartbeats.
	ReplicaRunning ReplicaState = "running"
	// ReplicaStopping: the replica stopped gracefully and drives nothing;
	// another replica may adopt its live sessions at once.
	ReplicaStopping ReplicaState = "stopping"
)

// Replica is one controller process as the store knows it: its heartbeat
// tells the other replicas whether it still drives its sessions.
type Replica struct {
	ID          string       `json:"id"`
	State       ReplicaState `json:"state"`
	StartedAt   time.Time    `json:"started_at"`
	HeartbeatAt time.Time    `json:"heartbeat_at"`
}

// Adoption moves a live session from the replica that drives it to another
// (or to a new process of the same replica): a compare-and-set on the
// session's owner and version, so that exactly one replica adopts it.
type Adoption struct {
	ID string
	// From is the replica that drove the session; Version the version it
	// was read at.
	From    string
	Version int64
	// To is the adopting replica.
	To      string
	Message string
	At      time.Time
}

// ReplicaStore keeps the controller replicas' heartbeats and the handover of
// sessions between them. Times are the replicas' own clocks.
type ReplicaStore interface {
	// StartReplica records replica id as running, started and heartbeating
	// at at (a replica that restarts under the same name starts again).
	StartReplica(ctx context.Context, id string, at time.Time) error
	// Heartbeat records that replica id is alive at at (an older time is
	// ignored), and returns it as stored: a replica that finds itself
	// stopping was not meant to run on.
	// Errors: ENOTFOUND (reason "replica_not_found") when it has no row
	// (forgotten by another replica): start it again.
	Heartbeat(ctx context.Context, id string, at time.Time) (Replica, error)
	// StopReplica marks replica id stopping at at: it drives nothing any
	// more, and the others adopt its sessions without waiting for its
	// heartbeat to go stale. Stopping a replica without a row is fine.
	StopReplica(ctx context.Context, id string, at time.Time) error
	// Replicas lists every replica, ordered by id.
	Replicas(ctx context.Context) ([]Replica, error)
	// ForgetReplica removes replica r.ID if it is still as r says (state,
	// start and heartbeat: it did not come back meanwhile) and it owns no
	// live session and no pooled machine. It reports whether it removed it.
	ForgetReplica(ctx context.Context, r Replica) (bool, error)
	// AdoptSession makes a.To the owner of live session a.ID if, and only
	// if, it is still owned by a.From at a.Version (compare-and-set); it
	// increases Version, moves the session's capacity slot to a.To,
	// appends an event (state unchanged, reason session_adopted) and
	// publishes the change.
	// Errors: ENOTFOUND; ECONFLICT (reason "stale") when the owner or the
	// version changed or the session is final.
	AdoptSession(ctx context.Context, a Adoption) (*Session, error)
}
