-- Key rotation: a new image-signing key is endorsed by the key before it, so nodes extend their
-- pinned key set along a signature chain, never on HQ's word alone.
ALTER TABLE signing_keys ADD COLUMN endorsement jsonb;
