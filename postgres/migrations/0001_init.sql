-- Sessions: one row per session; the machine, its secrets and the viewer are
-- columns of the row, so nothing about a session lives anywhere else.
-- Ids compare bytewise (COLLATE "C") whatever the database's locale, so
-- that pages are ordered as in the SQLite store.
CREATE TABLE sessions (
	id             text        COLLATE "C" PRIMARY KEY,
	user_id        text        NOT NULL,
	provider       text        NOT NULL,
	state          text        NOT NULL CHECK (state IN ('pending', 'starting', 'ready', 'capturing',
	                                                   'completed', 'failed', 'cancelled', 'expired')),
	reason         text        NOT NULL DEFAULT '',
	machine_id     text        NOT NULL DEFAULT '',
	machine_driver text        NOT NULL DEFAULT '',
	machine_ip     text        NOT NULL DEFAULT '',
	vnc_port       integer     NOT NULL DEFAULT 0,
	agent_port     integer     NOT NULL DEFAULT 0,
	vnc_password   text        NOT NULL DEFAULT '',
	agent_token    text        NOT NULL DEFAULT '',
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	ready_at       timestamptz,
	ended_at       timestamptz,
	expires_at     timestamptz NOT NULL,
	active_at      timestamptz NOT NULL,
	viewer         text        NOT NULL DEFAULT '',
	replica        text        NOT NULL DEFAULT '',
	version        bigint      NOT NULL
);

-- At most one active session per (user, provider), enforced by the database.
CREATE UNIQUE INDEX sessions_one_active ON sessions (user_id, provider)
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');
CREATE INDEX sessions_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_user_created ON sessions (user_id, created_at DESC, id DESC);

CREATE TABLE session_events (
	session_id text        COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	seq        bigint      NOT NULL,
	from_state text        NOT NULL,
	state      text        NOT NULL,
	reason     text        NOT NULL,
	message    text        NOT NULL,
	replica    text        NOT NULL,
	at         timestamptz NOT NULL,
	PRIMARY KEY (session_id, seq)
);

CREATE TABLE leases (
	pool  text        NOT NULL,
	value integer     NOT NULL,
	owner text        NOT NULL,
	at    timestamptz NOT NULL,
	PRIMARY KEY (pool, value),
	UNIQUE (pool, owner)
);
CREATE INDEX leases_owner ON leases (owner);

CREATE TABLE credentials (
	user_id     text        NOT NULL,
	provider    text        NOT NULL,
	session_id  text        NOT NULL,
	key_id      text        NOT NULL,
	nonce       bytea       NOT NULL,
	ciphertext  bytea       NOT NULL,
	captured_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, provider)
);

CREATE TABLE audit (
	id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at       timestamptz NOT NULL,
	actor    text        NOT NULL,
	action   text        NOT NULL,
	user_id  text        NOT NULL,
	provider text        NOT NULL,
	outcome  text        NOT NULL
);
CREATE INDEX audit_user ON audit (user_id, id DESC);

CREATE TABLE secrets (
	name       text        PRIMARY KEY,
	value      text        NOT NULL,
	created_at timestamptz NOT NULL
);

-- Every change a watcher cares about (state, version, viewer) is announced on
-- channel mc_session with the session id; the announcement goes out when the
-- transaction commits. Touch (active_at only) is not announced.
CREATE FUNCTION mc_notify_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('mc_session', NEW.id);
	RETURN NULL;
END
$$;

CREATE TRIGGER sessions_notify AFTER UPDATE ON sessions FOR EACH ROW
	WHEN (OLD.version IS DISTINCT FROM NEW.version
		OR OLD.state IS DISTINCT FROM NEW.state
		OR OLD.viewer IS DISTINCT FROM NEW.viewer)
	EXECUTE FUNCTION mc_notify_session();
