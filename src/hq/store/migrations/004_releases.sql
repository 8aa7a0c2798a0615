-- Signed releases (issue 5): the image-signing keys, signed manifests per (digest, track), approvals.

CREATE TABLE signing_keys (
  key_id text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
  public_key text NOT NULL,
  created_at timestamptz NOT NULL,
  retired_at timestamptz
);

-- One manifest per digest and track: a promotion adds the next track's manifest over the same digest.
CREATE TABLE manifests (
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
  track text NOT NULL CHECK (track IN ('devnet', 'testnet', 'mainnet')),
  image text NOT NULL,
  version text NOT NULL,
  pushed_by text NOT NULL,
  created_at timestamptz NOT NULL,
  -- The signed manifest as served (ImageManifest without `deprecated`).
  body jsonb NOT NULL,
  deprecated_at timestamptz,
  deprecated_by text,
  deprecated_reason text,
  PRIMARY KEY (digest, track)
);
CREATE INDEX manifests_image ON manifests (image, track);

-- Approvals for a target track, each a user signature over {purpose: approve, image, digest, track}.
CREATE TABLE approvals (
  digest text NOT NULL,
  track text NOT NULL CHECK (track IN ('testnet', 'mainnet')),
  user_name text NOT NULL,
  role text NOT NULL,
  signature jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (digest, track, user_name)
);
