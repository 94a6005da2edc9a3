-- Sessions: one row per session; the machine, its secrets and the viewer are
-- columns of the row, so nothing about a session lives anywhere else.
-- Ids ({{id}}) compare bytewise whatever the database's locale, so that
-- pages are ordered alike in every store.
CREATE TABLE sessions (
	id             {{id}} PRIMARY KEY,
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
	created_at     {{time}} NOT NULL,
	updated_at     {{time}} NOT NULL,
	ready_at       {{time}},
	ended_at       {{time}},
	expires_at     {{time}} NOT NULL,
	active_at      {{time}} NOT NULL,
	viewer         TEXT    NOT NULL DEFAULT '',
	replica        TEXT    NOT NULL DEFAULT '',
	version        {{int64}} NOT NULL
){{strict}};

-- At most one active session per (user, provider), enforced by the database.
CREATE UNIQUE INDEX sessions_one_active ON sessions (user_id, provider)
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');
CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_user_created ON sessions (user_id, created_at DESC, id DESC);

CREATE TABLE session_events (
	session_id {{id}} NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	seq        {{int64}} NOT NULL,
	from_state TEXT    NOT NULL,
	state      TEXT    NOT NULL,
	reason     TEXT    NOT NULL,
	message    TEXT    NOT NULL,
	replica    TEXT    NOT NULL,
	at         {{time}} NOT NULL,
	PRIMARY KEY (session_id, seq)
){{strict}};

CREATE TABLE leases (
	pool  TEXT    NOT NULL,
	value INTEGER NOT NULL,
	owner TEXT    NOT NULL,
	at    {{time}} NOT NULL,
	PRIMARY KEY (pool, value),
	UNIQUE (pool, owner)
){{strict}};
CREATE INDEX leases_owner ON leases (owner);

CREATE TABLE credentials (
	user_id     TEXT    NOT NULL,
	provider    TEXT    NOT NULL,
	session_id  TEXT    NOT NULL,
	key_id      TEXT    NOT NULL,
	nonce       {{bytes}} NOT NULL,
	ciphertext  {{bytes}} NOT NULL,
	captured_at {{time}} NOT NULL,
	PRIMARY KEY (user_id, provider)
){{strict}};

CREATE TABLE audit (
	id       {{serial}},
	at       {{time}} NOT NULL,
	actor    TEXT    NOT NULL,
	action   TEXT    NOT NULL,
	user_id  TEXT    NOT NULL,
	provider TEXT    NOT NULL,
	outcome  TEXT    NOT NULL
){{strict}};
CREATE INDEX audit_user ON audit (user_id, id DESC);

CREATE TABLE secrets (
	name       TEXT    PRIMARY KEY,
	value      TEXT    NOT NULL,
	created_at {{time}} NOT NULL
){{strict}};
