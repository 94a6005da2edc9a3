-- The login's progress: one JSON text ({"phase","url","updated_at"}), '' before it starts.
ALTER TABLE sessions ADD COLUMN login text NOT NULL DEFAULT '';

-- A change of login progress is announced like a change of state.
DROP TRIGGER sessions_notify ON sessions;
CREATE TRIGGER sessions_notify AFTER UPDATE ON sessions FOR EACH ROW
	WHEN (OLD.version IS DISTINCT FROM NEW.version
		OR OLD.state IS DISTINCT FROM NEW.state
		OR OLD.viewer IS DISTINCT FROM NEW.viewer
		OR OLD.login IS DISTINCT FROM NEW.login)
	EXECUTE FUNCTION mc_notify_session();

-- What a credential's files say (kind, expiries): no secret, so beside the ciphertext.
ALTER TABLE credentials ADD COLUMN meta text NOT NULL DEFAULT '';
