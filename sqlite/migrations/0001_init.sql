-- Sessions: one row per session; the machine, its secrets and the viewer are
-- columns of the row, so nothing about a session lives anywhere else.
-- Times are microseconds since the Unix epoch, UTC.
CREATE TABLE sessions (
	id             TEXT    PRIMARY KEY,
	user_id        TEXT    NOT NULL,
	provider       TEXT    NOT NULL,
	state          TEXT    NOT NULL CHECK (state IN ('pending', 'starting', 'ready', 'capturing',
	                                               'completed', 'failed', 'cancelled', 'expired')),
	reason         TEXT    NOT NULL DEFAULT '',
	machine_id     TEXT    NOT NULL DEFAULT '',
	machine_driver TEXT    NOT NULL DEFAULT '',
	machine_ip     TEXT    NOT NULL DEFAULT '',
	vnc_port       INTEGER NOT NULL DEFAULT 0,
	agent_port     INTEGER NOT NULL DEFAULT 0,
	vnc_password   TEXT    NOT NULL DEFAULT '',
	agent_token    TEXT    NOT NULL DEFAULT '',
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	ready_at       INTEGER,
	ended_at       INTEGER,
	expires_at     INTEGER NOT NULL,
	active_at      INTEGER NOT NULL,
	viewer         TEXT    NOT NULL DEFAULT '',
	replica        TEXT    NOT NULL DEFAULT '',
	version        INTEGER NOT NULL
) STRICT;

-- At most one active session per (user, provider), enforced by the database.
CREATE UNIQUE INDEX sessions_one_active ON sessions (user_id, provider)
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');
CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_user_created ON sessions (user_id, created_at DESC, id DESC);

CREATE TABLE session_events (
	session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	seq        INTEGER NOT NULL,
	from_state TEXT    NOT NULL,
	state      TEXT    NOT NULL,
	reason     TEXT    NOT NULL,
	message    TEXT    NOT NULL,
	replica    TEXT    NOT NULL,
	at         INTEGER NOT NULL,
	PRIMARY KEY (session_id, seq)
) STRICT;

CREATE TABLE leases (
	pool  TEXT    NOT NULL,
	value INTEGER NOT NULL,
	owner TEXT    NOT NULL,
	at    INTEGER NOT NULL,
	PRIMARY KEY (pool, value),
	UNIQUE (pool, owner)
) STRICT;
CREATE INDEX leases_owner ON leases (owner);

CREATE TABLE credentials (
	user_id     TEXT    NOT NULL,
	provider    TEXT    NOT NULL,
	session_id  TEXT    NOT NULL,
	key_id      TEXT    NOT NULL,
	nonce       BLOB    NOT NULL,
	ciphertext  BLOB    NOT NULL,
	captured_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, provider)
) STRICT;

CREATE TABLE audit (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	at       INTEGER NOT NULL,
	actor    TEXT    NOT NULL,
	action   TEXT    NOT NULL,
	user_id  TEXT    NOT NULL,
	provider TEXT    NOT NULL,
	outcome  TEXT    NOT NULL
) STRICT;
CREATE INDEX audit_user ON audit (user_id, id DESC);

CREATE TABLE secrets (
	name       TEXT    PRIMARY KEY,
	value      TEXT    NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
