-- Alerts, issue 8's last part: a silence that runs out is audited (by the evaluator, once), and
-- resolved alerts and old silences are pruned after a retention period.

-- When the evaluator recorded the silence's end in the audit ledger; NULL while it runs (or before
-- the first evaluation after it ran out).
ALTER TABLE alert_silences ADD COLUMN expiry_audited_at timestamptz;
-- The evaluator's question each minute: which silences ran out and are not audited yet.
CREATE INDEX alert_silences_unaudited ON alert_silences (expires_at) WHERE expiry_audited_at IS NULL;
-- Pruning takes the oldest resolved alerts first.
CREATE INDEX alerts_resolved_at ON alerts (resolved_at) WHERE state = 'resolved';
