-- Controller replicas and their heartbeats: with a cluster driver, whose
-- machines outlive the replica that started them, a replica that stops
-- (state 'stopping') or stops heartbeating has its live sessions adopted by
-- another (sessions.replica changes by compare-and-set).
CREATE TABLE replicas (
	id           TEXT    PRIMARY KEY,
	state        TEXT    NOT NULL CHECK (state IN ('running', 'stopping')),
	started_at   {{time}} NOT NULL,
	heartbeat_at {{time}} NOT NULL
){{strict}};

-- The live sessions of one replica, for adoption.
CREATE INDEX sessions_replica_live ON sessions (replica)
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');
