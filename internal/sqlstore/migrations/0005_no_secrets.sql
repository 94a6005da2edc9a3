-- Machine secrets and the viewer-token signing key are derived from the vault
-- keys (MachineKey), never stored: erase what a database from before that
-- change still holds in plaintext. The session columns stay, always empty,
-- until a later migration drops them.
UPDATE sessions SET vnc_password = '', agent_token = '' WHERE vnc_password <> '' OR agent_token <> '';
DELETE FROM secrets WHERE name = 'viewer_token_key';
