package mc

import (
	"context"
	"time"
)

// PoolState is where a pooled machine is: starting (the driver is creating
// it) or ready (its screen and agent answer; a session may claim it).
type PoolState string

// The states of a pooled machine. A claimed machine is no longer pooled: it
// is the session's, and its row leaves the pool.
const (
	PoolStarting PoolState = "starting"
	PoolReady    PoolState = "ready"
)

// PooledMachine is a machine started ahead of any session for one provider:
// its browser runs on a blank page with no login and no user data. One
// session claims it and it is destroyed with that session, never returned.
type PooledMachine struct {
	// ID names the machine and becomes the id of the session that claims
	// it, so that the machine's resources are owned by that session.
	ID       string    `json:"id"`
	Provider string    `json:"provider"`
	Replica  string    `json:"replica"`
	State    PoolState `json:"state"`
	// Machine is the zero value until the machine is ready.
	Machine   Machine   `json:"machine"`
	CreatedAt time.Time `json:"created_at"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
}

// Claim says how CreateSessionFromPool placed a session.
type Claim struct {
	// Pooled is true when the session took a ready pooled machine.
	Pooled bool
	// Evicted are pooled machines removed from the pool to make room for
	// the session's cold start; the caller destroys them.
	Evicted []PooledMachine
}

// PoolStore keeps the warm pool. A pooled machine holds a capacity slot
// like a live session from AddPooled until it is removed or claimed; a
// claim hands the slot to the session.
type PoolStore interface {
	// AddPooled records p (state starting; CreatedAt set by the caller) and
	// takes a slot of capacity c for it in one transaction.
	// Errors: EINVALID (bad id or provider), ECONFLICT (reason
	// "pooled_exists"), EUNAVAILABLE (reason "capacity") when c is full.
	AddPooled(ctx context.Context, p PooledMachine, c Capacity) error
	// PooledReady records the machine of a starting pooled machine and
	// makes it claimable.
	// Errors: ENOTFOUND when it left the pool (removed or evicted).
	PooledReady(ctx context.Context, id string, m Machine, at time.Time) error
	// RemovePooled takes an unclaimed machine out of the pool and frees its
	// slot; whoever removes it destroys it.
	// Errors: ENOTFOUND when it is not in the pool (claimed or removed).
	RemovePooled(ctx context.Context, id string) error
	// PooledMachines lists the pool of one replica ("" for every replica),
	// oldest first.
	PooledMachines(ctx context.Context, replica string) ([]PooledMachine, error)
	// CreateSessionFromPool is CreateSession that first tries to claim a
	// ready pooled machine of s.Provider (of replica when c.PerReplica, of
	// any replica otherwise), in the same transaction. On a hit, s takes the
	// machine's ID and Machine (Pooled set), and is created ready
	// at CreatedAt, with the events pending and ready (reason pooled); no
	// two sessions ever claim one machine. On a miss when c is full, it
	// removes one pooled machine of the bounded scope (another provider's
	// first) and gives its slot to the session, so that a real request has
	// priority over the pool.
	// Errors: those of CreateSession.
	CreateSessionFromPool(ctx context.Context, s *Session, replica string, c Capacity) (Claim, error)
}

// PoolProvider is the warm pool of one provider (GET /api/v1/pool).
type PoolProvider struct {
	Provider string `json:"provider"`
	// Target is the number of pooled machines the replica keeps.
	Target   int `json:"target"`
	Ready    int `json:"ready"`
	Starting int `json:"starting"`
}

// PoolStatus is a replica's warm pool (every replica's for a cluster
// driver, whose machines any replica may claim).
type PoolStatus struct {
	Replica string `json:"replica"`
	// MaxAge is the age at which a pooled machine is recycled.
	MaxAge    string         `json:"max_age"`
	Providers []PoolProvider `json:"providers"`
}
