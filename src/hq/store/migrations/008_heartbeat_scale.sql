-- Heartbeat ingest at fleet scale (issue 7): the latest-state table updated in place, and a bounded
-- history of compact summaries appended in the same batched flush.

-- Every heartbeat rewrites its node's row. With free space left in each page and no index on the
-- columns that change (received_at, body), PostgreSQL updates the row in place (a HOT update):
-- no new index entry, and the dead version is reclaimed by page pruning instead of waiting for vacuum.
ALTER TABLE node_heartbeats SET (fillfactor = 70);

-- One row per heartbeat received, pruned by HQ after the retention period (default 24 h). A compact
-- summary, not the body: 2,000 nodes at one heartbeat a minute are 2.9 million rows a day.
-- No foreign key to nodes: a check per appended row buys nothing for a table that only grows and is
-- pruned by age (nodes are revoked, never deleted).
CREATE TABLE node_heartbeat_history (
  node_id text NOT NULL,
  received_at timestamptz NOT NULL,
  containers_total integer NOT NULL,
  containers_running integer NOT NULL,
  containers_unhealthy integer NOT NULL,
  cpu_percent real NOT NULL,
  memory_percent real NOT NULL,
  disk_percent real NOT NULL,
  desired_sequence bigint NOT NULL,
  -- The first 16 hex of SHA-256 over the services' name, digest and version: a change of what runs shows as a new digest.
  versions_digest text NOT NULL
);
-- A node's recent history, newest first.
CREATE INDEX node_heartbeat_history_node ON node_heartbeat_history (node_id, received_at DESC);
-- What the retention loop deletes, oldest first. A B-tree, not BRIN: pruned pages are refilled by
-- new rows, so block ranges would soon span the whole retention period.
CREATE INDEX node_heartbeat_history_received ON node_heartbeat_history (received_at);
