-- Machine secrets and the viewer-token signing key are derived from the vault
-- keys (MachineKey), never stored: the session columns that held the machine
-- secrets (empty since version 5) and the secrets table go.
ALTER TABLE sessions DROP COLUMN vnc_password;
ALTER TABLE sessions DROP COLUMN agent_token;
DROP TABLE secrets;
