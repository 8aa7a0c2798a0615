-- Identity and access (issue: users, operators, node admission, revocation).

-- Node-running organisations and their KYC status: only approved operators' nodes may join.
CREATE TABLE operators (
  name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._&-]{0,99}$'),
  kyc text NOT NULL CHECK (kyc IN ('approved', 'pending', 'rejected')),
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);

-- Nodes, from admission (pending) to revocation (permanent: a revoked id never joins again).
CREATE TABLE nodes (
  id text PRIMARY KEY CHECK (id ~ '^[A-Z]{2}-[A-Z0-9]{2,8}-[0-9]{2,3}$'),
  zone text NOT NULL REFERENCES zones (code),
  operator text NOT NULL REFERENCES operators (name),
  track text NOT NULL CHECK (track IN ('devnet', 'testnet', 'mainnet')),
  status text NOT NULL CHECK (status IN ('pending', 'active', 'revoked')),
  hardware jsonb,
  created_at timestamptz NOT NULL,
  joined_at timestamptz,
  revoked_at timestamptz,
  revoke_reason text
);
CREATE INDEX nodes_zone ON nodes (zone, status);

-- One-time join tokens, stored only as SHA-256 hashes, bound to a node id, zone, operator and track.
CREATE TABLE join_tokens (
  token_hash text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
  node_id text NOT NULL REFERENCES nodes (id),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX join_tokens_node ON join_tokens (node_id);

-- The CRL HQ serves, re-signed on revocation and on a schedule; numbers only go up.
CREATE TABLE crls (
  number bigint PRIMARY KEY,
  this_update timestamptz NOT NULL,
  next_update timestamptz NOT NULL,
  der bytea NOT NULL
);

-- Revocations of this time or later are what each replica polls to close live sockets.
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
