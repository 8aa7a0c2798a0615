-- Alert webhooks (issue 8, item 3): where notifications go, and the outbox of their deliveries.
-- The evaluator's sink writes deliveries in the transaction that opens or resolves the alert, so
-- an HQ restart loses none; the delivery loops of every replica claim due rows with SKIP LOCKED.

CREATE TABLE webhooks (
  id text PRIMARY KEY CHECK (id ~ '^wh_[0-9a-z]{20}$'),
  url text NOT NULL CHECK (url ~ '^https?://'),
  format text NOT NULL CHECK (format IN ('generic', 'slack', 'pagerduty')),
  -- HQ signs every POST with it, so it must hold it; the API never returns it (only a fingerprint).
  -- Wiped when the webhook is removed.
  secret text NOT NULL,
  secret_fingerprint text NOT NULL,
  -- PagerDuty's integration key (pagerduty only): sent in the body, never listed.
  routing_key text,
  routing_key_fingerprint text,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  -- Removed webhooks stay, so their deliveries keep their history.
  removed_at timestamptz,
  CHECK ((format = 'pagerduty') = (routing_key IS NOT NULL) OR removed_at IS NOT NULL)
);

CREATE TABLE webhook_deliveries (
  id text PRIMARY KEY CHECK (id ~ '^wd_[0-9a-z]{20}$'),
  webhook_id text NOT NULL REFERENCES webhooks (id),
  event text NOT NULL CHECK (event IN ('opened', 'resolved', 'test')),
  alert_id text,
  fingerprint text,
  -- The alert as notified: each attempt renders the same body from it in the webhook's format.
  alert jsonb NOT NULL,
  state text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  -- Due time of the next attempt; while an attempt is in flight, the end of its claim (a replica
  -- that dies mid-attempt leaves it to be claimed again then).
  next_attempt_at timestamptz,
  last_status integer,
  last_error text,
  -- [{at, status, error}], one per attempt.
  attempt_log jsonb NOT NULL DEFAULT '[]'::jsonb,
  created_at timestamptz NOT NULL,
  finished_at timestamptz,
  CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL))
);
-- What the delivery loops claim.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
-- `jil alerts webhook deliveries`, newest first, per webhook.
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at DESC);
