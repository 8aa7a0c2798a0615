-- What nodes run and what they report (issue 6): signed stack specs per track, pinned versions on
-- testnet/mainnet, each node's desired-state sequence, run mode and config version, and the latest
-- heartbeat and agent reports per node.

-- Every version of a track's stack spec, as signed (StackRecord). The newest version is current.
CREATE TABLE stack_specs (
  track text NOT NULL CHECK (track IN ('devnet', 'testnet', 'mainnet')),
  version integer NOT NULL CHECK (version >= 1),
  record jsonb NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (track, version)
);

-- The version each service runs on testnet and mainnet (devnet follows its newest signed manifest).
-- A pin lower than the one before it carries the user's signed rollback, which nodes check.
CREATE TABLE stack_pins (
  track text NOT NULL CHECK (track IN ('testnet', 'mainnet')),
  service text NOT NULL,
  version text NOT NULL,
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
  repository text NOT NULL,
  rollback jsonb,
  pinned_by text NOT NULL,
  pinned_at timestamptz NOT NULL,
  PRIMARY KEY (track, service)
);

-- The monotonic sequence of each node's desired state: it goes up only when the content changes.
CREATE TABLE desired_state_sequences (
  node_id text PRIMARY KEY REFERENCES nodes (id),
  sequence bigint NOT NULL CHECK (sequence >= 1),
  content_hash text NOT NULL,
  updated_at timestamptz NOT NULL
);

-- Set by fleet commands (stop, pause, config push); desired states carry them.
ALTER TABLE nodes ADD COLUMN run_mode text NOT NULL DEFAULT 'running' CHECK (run_mode IN ('running', 'paused', 'stopped'));
ALTER TABLE nodes ADD COLUMN config_version integer NOT NULL DEFAULT 0 CHECK (config_version >= 0);

-- The latest heartbeat of each node (received_at is HQ's clock: offline is judged by it).
CREATE TABLE node_heartbeats (
  node_id text PRIMARY KEY REFERENCES nodes (id),
  received_at timestamptz NOT NULL,
  body jsonb NOT NULL
);

-- The latest report of each agent on each node.
CREATE TABLE node_reports (
  node_id text NOT NULL REFERENCES nodes (id),
  agent text NOT NULL CHECK (agent IN ('health', 'maintenance', 'security', 'update')),
  received_at timestamptz NOT NULL,
  body jsonb NOT NULL,
  PRIMARY KEY (node_id, agent)
);
