-- Alerts (issue 8): what the evaluator (one replica, advisory lock) found wrong with the fleet, one
-- open alert per fingerprint (rule + subject), auto-resolved when the condition clears; and silences,
-- which hold back the notification of matching alerts until they expire.

CREATE TABLE alerts (
  id text PRIMARY KEY CHECK (id ~ '^al_[0-9a-z]{20}$'),
  fingerprint text NOT NULL,
  rule text NOT NULL,
  -- A node id, or a rollout id (rollout-failed).
  subject text NOT NULL,
  -- The node the alert is about, if any: what a silence with a node matches. It comes from the
  -- nodes table in the same evaluation (nodes are revoked, never deleted): no foreign key to check.
  node_id text,
  severity text NOT NULL CHECK (severity IN ('warning', 'critical')),
  state text NOT NULL CHECK (state IN ('open', 'acked', 'resolved')),
  summary text NOT NULL,
  details jsonb NOT NULL,
  -- A matching silence held back the notification; `notified` says whether the opening was sent, so
  -- the resolution is sent exactly for alerts whose opening was.
  silenced boolean NOT NULL DEFAULT false,
  notified boolean NOT NULL DEFAULT false,
  -- SHA-256 of severity, summary and details as last written: an evaluation rewrites only what changed.
  content_hash text NOT NULL,
  first_seen timestamptz NOT NULL,
  last_seen timestamptz NOT NULL,
  resolved_at timestamptz,
  acked_by text,
  acked_at timestamptz,
  CHECK ((state = 'resolved') = (resolved_at IS NOT NULL))
) WITH (fillfactor = 70);
-- Every evaluation moves last_seen of every open alert: no index holds it, and pages keep room, so
-- those updates stay in place (HOT), as the heartbeats' do.

-- One open (or acked) alert per fingerprint; resolved ones are history.
CREATE UNIQUE INDEX alerts_open_fingerprint ON alerts (fingerprint) WHERE state <> 'resolved';
-- Listing, newest first, by state (the partial index above serves the evaluator).
CREATE INDEX alerts_state_first_seen ON alerts (state, first_seen DESC);

CREATE TABLE alert_silences (
  id text PRIMARY KEY CHECK (id ~ '^si_[0-9a-z]{20}$'),
  rule text NOT NULL,
  -- NULL: the rule on every node.
  node_id text REFERENCES nodes (id),
  reason text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL CHECK (expires_at > created_at)
);
CREATE INDEX alert_silences_expires ON alert_silences (expires_at);

-- What the rules read of each node's latest heartbeat, computed as the heartbeat is stored, so an
-- evaluation reads a few narrow values instead of decompressing every body. No index on them: the
-- in-place (HOT) updates of migration 008 stay in place. `running_key` names what runs (service
-- names and digests, in the heartbeat's order): a node whose key is the one its desired state
-- implies runs exactly that, so the evaluator need not look closer.
ALTER TABLE node_heartbeats
  ADD COLUMN disk_percent float8 GENERATED ALWAYS AS ((body -> 'system' ->> 'disk_percent')::float8) STORED,
  ADD COLUMN sync_lag_s float8 GENERATED ALWAYS AS ((body -> 'sync' ->> 'lag_s')::float8) STORED,
  ADD COLUMN critical_down boolean GENERATED ALWAYS AS (jsonb_path_exists(body, '$.services[*] ? (@.critical == true && (@.state != "running" || @.health == "unhealthy"))')) STORED,
  ADD COLUMN running_key text GENERATED ALWAYS AS (md5(jsonb_path_query_array(body, '$.services[*].name')::text || jsonb_path_query_array(body, '$.services[*].digest')::text)) STORED;

-- The critical findings of each agent report, and the few security reports that have any.
ALTER TABLE node_reports
  ADD COLUMN critical_findings jsonb GENERATED ALWAYS AS (jsonb_path_query_array(body, '$.findings[*] ? (@.severity == "critical")')) STORED;
CREATE INDEX node_reports_security_critical ON node_reports (node_id) WHERE agent = 'security' AND critical_findings <> '[]'::jsonb;
