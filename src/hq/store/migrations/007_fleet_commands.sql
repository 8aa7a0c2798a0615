-- Commands to nodes (issue 7, the seed's jil.fleet.commands): stored here, delivered to the node's
-- daemon by long-poll (or picked up by its health run under cron), executed once by id on the node,
-- answered with a result. A pending command nobody picked up by expires_at is expired.
CREATE TABLE fleet_commands (
  id text PRIMARY KEY CHECK (id ~ '^cmd_[0-9a-z]{20}$'),
  -- Insertion order: commands sent at the same instant still reach the node in the order they were sent.
  seq bigint GENERATED ALWAYS AS IDENTITY,
  node_id text NOT NULL REFERENCES nodes (id),
  command text NOT NULL CHECK (command IN ('refresh', 'cycle', 'pause', 'resume', 'stop', 'start', 'reboot')),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  delivered_at timestamptz,
  deliveries integer NOT NULL DEFAULT 0 CHECK (deliveries >= 0),
  finished_at timestamptz,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'expired')),
  result jsonb
);
-- What a node's long-poll looks for, and what the expiry sweep walks: the open commands only.
CREATE INDEX fleet_commands_open ON fleet_commands (node_id, created_at) WHERE status IN ('pending', 'delivered');
CREATE INDEX fleet_commands_node ON fleet_commands (node_id, created_at DESC);
CREATE INDEX fleet_commands_created ON fleet_commands (created_at DESC);
