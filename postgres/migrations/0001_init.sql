-- PostgreSQL's part of version 1 (the shared tables are internal/sqlstore's).
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
