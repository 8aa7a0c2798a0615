-- The 13 compliance zones. Zones are data: adding a jurisdiction is a migration, not a code change.
CREATE TABLE zones (
  code text PRIMARY KEY CHECK (code ~ '^[A-Z]{2}/[A-Z]+$'),
  country text NOT NULL,
  regulator text NOT NULL,
  name text NOT NULL
);

INSERT INTO zones (code, country, regulator, name) VALUES
  ('CH/FINMA',  'CH', 'FINMA',  'Switzerland'),
  ('AE/FSRA',   'AE', 'FSRA',   'United Arab Emirates'),
  ('SG/MAS',    'SG', 'MAS',    'Singapore'),
  ('US/FINCEN', 'US', 'FINCEN', 'United States'),
  ('GB/FCA',    'GB', 'FCA',    'United Kingdom'),
  ('DE/BAFIN',  'DE', 'BAFIN',  'Germany'),
  ('JP/JFSA',   'JP', 'JFSA',   'Japan'),
  ('BR/CVM',    'BR', 'CVM',    'Brazil'),
  ('IN/SEBI',   'IN', 'SEBI',   'India'),
  ('AU/ASIC',   'AU', 'ASIC',   'Australia'),
  ('KR/FSC',    'KR', 'FSC',    'South Korea'),
  ('CA/OSC',    'CA', 'OSC',    'Canada'),
  ('HK/SFC',    'HK', 'SFC',    'Hong Kong');

-- One row per HQ installation sharing this database (replicas share it): which CA it trusts.
CREATE TABLE hq_meta (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- People and pipelines driving HQ. The role here is authoritative; the cert carries a copy.
CREATE TABLE users (
  name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9._-]{0,62}$'),
  role text NOT NULL CHECK (role IN ('admin', 'ops-lead', 'security-lead', 'ci-pipeline', 'viewer')),
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);

-- Every certificate the CA issued, by serial (lower-case hex): the request hook finds the
-- principal and the revocation state of a client certificate here.
CREATE TABLE certificates (
  serial text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]+$'),
  kind text NOT NULL CHECK (kind IN ('user', 'node', 'server')),
  subject text NOT NULL,
  fingerprint text NOT NULL UNIQUE,
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  revoke_reason text
);
CREATE INDEX certificates_subject ON certificates (kind, subject);
