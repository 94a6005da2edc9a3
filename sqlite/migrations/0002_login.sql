-- The login's progress: one JSON text ({"phase","url","updated_at"}), '' before it starts.
ALTER TABLE sessions ADD COLUMN login TEXT NOT NULL DEFAULT '';
