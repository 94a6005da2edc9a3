-- A machine that listens on Unix sockets only (the local driver without
-- root) records the directory of its sockets; '' for a machine on TCP.
ALTER TABLE sessions ADD COLUMN machine_socket_dir TEXT NOT NULL DEFAULT '';
ALTER TABLE pool_machines ADD COLUMN machine_socket_dir TEXT NOT NULL DEFAULT '';
