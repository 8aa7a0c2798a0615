-- The daemon's heartbeats on jil.fleet.status carry their own per-source sequence: state events
-- number 1, 2, 3, … across the state topics (consumers find lost changes by its gaps), and a status
-- stream interleaved in it would open a gap on every heartbeat. Kept here so a restart goes on counting.
ALTER TABLE jil_sync_node ADD COLUMN status_seq bigint NOT NULL DEFAULT 0;
