-- Live sessions counted by scope, so that the capacity check at creation
-- reads one row, whatever the number of sessions: scope '*' counts every
-- replica's live sessions, 'replica:<name>' those that replica created.
-- CreateSession takes a slot in its own transaction; a Transition to a final
-- state frees it in its own.
CREATE TABLE slots (
	scope  TEXT    PRIMARY KEY,
	active {{int64}} NOT NULL CHECK (active >= 0)
){{strict}};

INSERT INTO slots (scope, active)
	SELECT '*', count(*) FROM sessions
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired');
INSERT INTO slots (scope, active)
	SELECT 'replica:' || replica, count(*) FROM sessions
	WHERE state NOT IN ('completed', 'failed', 'cancelled', 'expired')
	GROUP BY replica;
