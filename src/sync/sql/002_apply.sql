-- The applier's bookkeeping, kept in the node database so that it commits in the same transaction
-- as the changes it applies (exactly-once effect across crashes).

-- The consumer group's position: the next offset to read, per topic partition.
CREATE TABLE jil_sync_offsets (
  topic text NOT NULL,
  partition integer NOT NULL,
  next_offset bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition)
);

-- Events already applied (de-duplication by event_id; UUIDv7 ids arrive roughly in order, so the
-- index grows at its right edge).
CREATE TABLE jil_sync_applied (
  event_id uuid PRIMARY KEY,
  source_id text NOT NULL,
  seq bigint NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);

-- Per source: the highest sequence seen and how many distinct events were taken.
CREATE TABLE jil_sync_sources (
  source_id text PRIMARY KEY,
  last_seq bigint NOT NULL,
  events bigint NOT NULL DEFAULT 0,
  last_ts timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Sequences not (yet) seen below a source's last_seq. Events of one source travel on several
-- partitions, so a gap may close when a slower partition delivers; one that stays open while the
-- node is caught up is an event lost upstream.
CREATE TABLE jil_sync_gaps (
  source_id text NOT NULL,
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL CHECK (to_seq >= from_seq),
  detected_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source_id, from_seq)
);
