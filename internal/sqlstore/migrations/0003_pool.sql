-- The warm pool: machines started ahead of any session, one row each until
-- a session claims the machine (the row leaves, the session takes its id) or
-- the machine is removed. Each row holds a slot in slots like a live session.
CREATE TABLE pool_machines (
	id             {{id}} PRIMARY KEY,
	provider       TEXT    NOT NULL,
	replica        TEXT    NOT NULL,
	state          TEXT    NOT NULL CHECK (state IN ('starting', 'ready')),
	machine_id     TEXT    NOT NULL DEFAULT '',
	machine_driver TEXT    NOT NULL DEFAULT '',
	machine_ip     TEXT    NOT NULL DEFAULT '',
	vnc_port       INTEGER NOT NULL DEFAULT 0,
	agent_port     INTEGER NOT NULL DEFAULT 0,
	created_at     {{time}} NOT NULL,
	ready_at       {{time}}
){{strict}};
CREATE INDEX pool_machines_claim ON pool_machines (provider, state, ready_at);

-- A session on a machine from the pool says so.
ALTER TABLE sessions ADD COLUMN machine_pooled INTEGER NOT NULL DEFAULT 0;
