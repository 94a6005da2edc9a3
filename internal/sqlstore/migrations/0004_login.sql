-- The login's progress: one JSON text ({"phase","url","updated_at"}), '' before it starts.
ALTER TABLE sessions ADD COLUMN login TEXT NOT NULL DEFAULT '';

-- What a credential's files say (kind, expiries): no secret, so beside the ciphertext.
ALTER TABLE credentials ADD COLUMN meta TEXT NOT NULL DEFAULT '';
