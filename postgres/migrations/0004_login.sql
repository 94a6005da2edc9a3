-- PostgreSQL's part of version 4 (the login column is internal/sqlstore's):
-- a change of login progress is announced like a change of state.
DROP TRIGGER sessions_notify ON sessions;
CREATE TRIGGER sessions_notify AFTER UPDATE ON sessions FOR EACH ROW
	WHEN (OLD.version IS DISTINCT FROM NEW.version
		OR OLD.state IS DISTINCT FROM NEW.state
		OR OLD.viewer IS DISTINCT FROM NEW.viewer
		OR OLD.login IS DISTINCT FROM NEW.login)
	EXECUTE FUNCTION mc_notify_session();
