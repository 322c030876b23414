-- SPDX-License-Identifier: Apache-2.0
-- The ledger's schema version 1, as provisioner's first PostgreSQL store made it (the first
-- step in factory/journal_pg.c), kept here so that test_ledger_schema.sh builds an older
-- ledger with psql and shows `ledger migrate` upgrading it. Never edited: a schema change is
-- a new step in factory/journal_pg.c.
BEGIN;
CREATE TABLE schema_version(version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now(), tool TEXT NOT NULL);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE lot(id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, manifest TEXT, created TEXT NOT NULL);
CREATE TABLE run(id BIGSERIAL PRIMARY KEY, lot_id BIGINT NOT NULL REFERENCES lot(id), reissue TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, request BIGINT REFERENCES run(id));
CREATE TABLE device(id BIGSERIAL PRIMARY KEY, lot_id BIGINT NOT NULL REFERENCES lot(id), serial TEXT NOT NULL, device_uri TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN  ('intent','issued','stored','proven','failed','superseded')), key_id BYTEA, key_uri TEXT, storage TEXT, cert_id BIGINT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, updated TEXT NOT NULL, UNIQUE (lot_id, serial));
CREATE TABLE certificate(id BIGSERIAL PRIMARY KEY, device_id BIGINT NOT NULL REFERENCES device(id), device_serial TEXT NOT NULL, issuer TEXT NOT NULL, cert_serial TEXT NOT NULL, pubkey_sha256 TEXT NOT NULL, sha256 TEXT NOT NULL, not_after TEXT NOT NULL, key_id BYTEA NOT NULL, der BYTEA NOT NULL, issued TEXT NOT NULL, superseded TEXT, superseded_run BIGINT REFERENCES run(id), device_uri TEXT, retired TEXT, CONSTRAINT certificate_serial_per_issuer UNIQUE (issuer, cert_serial), CONSTRAINT certificate_pubkey UNIQUE (pubkey_sha256));
ALTER TABLE device ADD CONSTRAINT device_cert FOREIGN KEY (cert_id) REFERENCES certificate(id);
CREATE UNIQUE INDEX certificate_current ON certificate(issuer, device_serial) WHERE superseded IS NULL;
CREATE INDEX certificate_by_device ON certificate(device_id);
CREATE TABLE audit(seq BIGINT PRIMARY KEY, at TEXT NOT NULL, lot TEXT NOT NULL, serial TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_by_serial ON audit(lot, serial, seq);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'the audit table is append-only'; END$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TABLE station_claim(lot_id BIGINT NOT NULL REFERENCES lot(id), serial TEXT NOT NULL, identity TEXT NOT NULL, instance TEXT NOT NULL, claimed TEXT NOT NULL, PRIMARY KEY (lot_id, serial), UNIQUE (lot_id, identity));
INSERT INTO schema_version(version, tool) VALUES (1, 'provisioner');
COMMIT;
