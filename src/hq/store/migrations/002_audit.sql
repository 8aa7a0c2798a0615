-- The audit ledger (DESIGN.md §7). Actions write audit_pending inside their own transaction; the one
-- sequencer (advisory lock) moves committed rows into audit_log in batches, assigning gapless seq
-- numbers and chained hashes. audit_log and audit_checkpoints are append-only in the database itself.

CREATE TABLE audit_pending (
  id bigserial PRIMARY KEY,
  time timestamptz NOT NULL,
  actor jsonb NOT NULL,
  action text NOT NULL,
  subject text NOT NULL,
  details jsonb NOT NULL
);

CREATE TABLE audit_log (
  seq bigint PRIMARY KEY CHECK (seq >= 1),
  time timestamptz NOT NULL,
  actor jsonb NOT NULL,
  action text NOT NULL,
  subject text NOT NULL,
  details jsonb NOT NULL,
  prev_hash bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash bytea NOT NULL CHECK (length(hash) = 32),
  -- Which pending row became this entry, so an action can learn its seq. Not part of the hash.
  pending_id bigint UNIQUE
);
CREATE INDEX audit_log_actor ON audit_log ((actor ->> 'id'), seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_time ON audit_log (time);

CREATE TABLE audit_checkpoints (
  tree_size bigint PRIMARY KEY CHECK (tree_size >= 1),
  origin text NOT NULL,
  root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
  time timestamptz NOT NULL,
  key_id text NOT NULL,
  signature bytea NOT NULL
);

CREATE FUNCTION jil_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION jil_reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION jil_reject_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION jil_reject_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION jil_reject_change();
