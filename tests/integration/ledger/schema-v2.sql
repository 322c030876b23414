-- SPDX-License-Identifier: Apache-2.0
-- The ledger's schema version 2 on top of schema-v1.sql, as the second step in
-- factory/journal_pg.c made it (per-station audit chains, the work table of leases), kept
-- here so that test_ledger_schema.sh builds a ledger of that version with psql and shows
-- `ledger migrate` upgrading it. Never edited: a schema change is a new step in
-- factory/journal_pg.c.
BEGIN;
ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT '';
ALTER TABLE audit DROP CONSTRAINT audit_pkey;
ALTER TABLE audit ADD PRIMARY KEY (chain, seq);
CREATE TABLE audit_head(chain TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head(chain, seq, hash) SELECT '', split_part(value, ':', 1)::bigint, split_part(value, ':', 2) FROM meta WHERE key = 'audit_head';
DELETE FROM meta WHERE key = 'audit_head';
CREATE SEQUENCE lease_token;
CREATE TABLE work(lot_id BIGINT NOT NULL REFERENCES lot(id), serial TEXT NOT NULL, station TEXT, token BIGINT, expires TIMESTAMPTZ, done BOOLEAN NOT NULL DEFAULT false, PRIMARY KEY (lot_id, serial));
CREATE INDEX work_open ON work(lot_id) WHERE NOT done;
INSERT INTO schema_version(version, tool) VALUES (2, 'provisioner');
COMMIT;
