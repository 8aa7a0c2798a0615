-- Rollouts (issue 7): testnet and mainnet nodes move by rollout, one node's pin at a time, advanced by
-- one HQ replica (advisory lock) from what the nodes' heartbeats show. All state lives here, so a
-- rollout resumes where it was after an HQ restart.

-- A node's own version of a service, over its track's pin (set by a rollout or a per-node rollback).
-- `previous_*` is what the node was meant to run before: a rollback returns to it. A pin lower than
-- the one before it carries the user's signed rollback, which the node checks.
CREATE TABLE node_pins (
  node_id text NOT NULL REFERENCES nodes (id),
  service text NOT NULL,
  version text NOT NULL,
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
  repository text NOT NULL,
  rollback jsonb,
  previous_version text,
  previous_digest text CHECK (previous_digest ~ '^sha256:[0-9a-f]{64}$'),
  rollout_id text,
  pinned_by text NOT NULL,
  pinned_at timestamptz NOT NULL,
  PRIMARY KEY (node_id, service)
);

CREATE TABLE rollouts (
  id text PRIMARY KEY CHECK (id ~ '^ro_[0-9a-z]{20}$'),
  seq bigint GENERATED ALWAYS AS IDENTITY,
  -- {"zone": "CH/FINMA"} or {"node": "CH-ZUG-01"}, plus the track filter when one was given.
  target jsonb NOT NULL,
  image text NOT NULL,
  repository text NOT NULL,
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
  version text NOT NULL,
  max_parallel integer NOT NULL CHECK (max_parallel >= 1),
  min_healthy_ms integer NOT NULL CHECK (min_healthy_ms >= 0),
  health_timeout_ms integer NOT NULL CHECK (health_timeout_ms >= 1000),
  auto_revert boolean NOT NULL,
  -- Pause after this many nodes are done (0: no canary) until a user resumes.
  canary integer NOT NULL CHECK (canary >= 0),
  canary_released boolean NOT NULL DEFAULT false,
  state text NOT NULL CHECK (state IN ('running', 'paused', 'succeeded', 'failed', 'reverting', 'reverted', 'aborted')),
  reason text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  finished_at timestamptz
);
CREATE INDEX rollouts_open ON rollouts (seq) WHERE state IN ('running', 'paused', 'reverting');
CREATE INDEX rollouts_created ON rollouts (seq DESC);

-- The nodes of a rollout, in the order they move. `services` holds, per service of the node that runs
-- the rollout's image: its previous version and digest and, with auto-revert, the user's signed
-- rollback to it (signed when the rollout was created: HQ cannot sign a downgrade on its own).
CREATE TABLE rollout_nodes (
  rollout_id text NOT NULL REFERENCES rollouts (id),
  node_id text NOT NULL REFERENCES nodes (id),
  position integer NOT NULL,
  services jsonb NOT NULL,
  state text NOT NULL CHECK (state IN ('pending', 'upgrading', 'done', 'failed', 'reverting', 'reverted', 'revert_failed', 'skipped', 'halted')),
  started_at timestamptz,
  healthy_since timestamptz,
  finished_at timestamptz,
  error text,
  PRIMARY KEY (rollout_id, node_id)
);
-- A node is in at most one open rollout; this finds it (and its status `upgrading`).
CREATE INDEX rollout_nodes_node ON rollout_nodes (node_id) WHERE state IN ('pending', 'upgrading', 'reverting');
