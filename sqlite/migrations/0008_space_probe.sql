-- SQLite's part of version 8 (the shared part drops the secrets table, where
-- the probe used to write): the table of the space probe, empty but while a
-- probe's transaction runs.
CREATE TABLE space_probe (value TEXT NOT NULL) STRICT;
