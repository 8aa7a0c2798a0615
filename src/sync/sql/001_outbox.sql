-- The node database's side of event sync (the sync issue): the outbox that services write in their
-- own transactions, and what jil needs to ship it. Services own their tables; jil owns these.

-- This node's identity as a source, and the last sequence the relay gave out.
CREATE TABLE jil_sync_node (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  source_id text NOT NULL,
  last_seq bigint NOT NULL DEFAULT 0
);

-- One row per state change, written in the same transaction as the change (a crash can lose
-- neither without the other). The relay stamps seq and event_id in order, publishes, marks sent.
CREATE TABLE jil_outbox (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL CHECK (table_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
  key jsonb NOT NULL CHECK (jsonb_typeof(key) = 'array' AND jsonb_array_length(key) BETWEEN 1 AND 16),
  version bigint NOT NULL,
  op text NOT NULL CHECK (op IN ('upsert', 'delete')),
  -- "row" is a keyword in SQL: row_data spares every service quoting it.
  row_data jsonb CHECK ((op = 'upsert') = (row_data IS NOT NULL)),
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  seq bigint UNIQUE,
  event_id uuid UNIQUE,
  sent_at timestamptz
);
CREATE INDEX jil_outbox_unsent ON jil_outbox (id) WHERE sent_at IS NULL;
CREATE INDEX jil_outbox_sent_at ON jil_outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Who last wrote each synced row, live or deleted (a delete leaves a tombstone here): concurrent
-- changes to one row converge on the greatest (version, ts, source_id) on every node.
-- The key is the key array's jsonb text (PostgreSQL's one rendering on every node): text compares
-- faster than jsonb in the index that every applied change hits.
CREATE TABLE jil_sync_rows (
  table_name text NOT NULL,
  key text NOT NULL,
  version bigint NOT NULL,
  ts timestamptz NOT NULL,
  source_id text NOT NULL,
  deleted boolean NOT NULL,
  PRIMARY KEY (table_name, key)
) WITH (fillfactor = 80); -- room on each page for HOT updates: rows are rewritten with every change

-- What services call, inside their own transaction, right after changing a synced row:
--   SELECT jil_emit('wallet_accounts', '["acct-42"]', 7, 'upsert', to_jsonb(w)) FROM wallet_accounts w WHERE id = 'acct-42';
--   SELECT jil_emit('wallet_accounts', '["acct-42"]', 8, 'delete');
-- The key is the key columns' values in the declared order (a scalar is taken as a one-item key);
-- the version must grow with every change of the row. Returns the outbox id.
CREATE FUNCTION jil_emit(p_table text, p_key jsonb, p_version bigint, p_op text, p_row jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_source text;
  v_id bigint;
  v_ts timestamptz := clock_timestamp();
BEGIN
  SELECT source_id INTO v_source FROM jil_sync_node;
  IF v_source IS NULL THEN
    RAISE EXCEPTION 'jil sync is not set up in this database' USING ERRCODE = '55000', HINT = 'start the node''s sync once (jil daemon with JIL_SYNC_TRANSPORT set)';
  END IF;
  IF jsonb_typeof(p_key) <> 'array' THEN
    p_key := jsonb_build_array(p_key);
  END IF;
  INSERT INTO jil_outbox (table_name, key, version, op, row_data, created_at)
    VALUES (p_table, p_key, p_version, p_op, CASE WHEN p_op = 'delete' THEN NULL ELSE p_row END, v_ts)
    RETURNING id INTO v_id;
  INSERT INTO jil_sync_rows (table_name, key, version, ts, source_id, deleted)
    VALUES (p_table, p_key::text, p_version, v_ts, v_source, p_op = 'delete')
    ON CONFLICT (table_name, key) DO UPDATE
      SET version = EXCLUDED.version, ts = EXCLUDED.ts, source_id = EXCLUDED.source_id, deleted = EXCLUDED.deleted;
  -- Delivered at commit (and once per transaction): wakes the relay without polling.
  PERFORM pg_notify('jil_outbox', '');
  RETURN v_id;
END
$$;
