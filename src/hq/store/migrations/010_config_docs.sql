-- Config push (issue 7): versioned config documents (compliance zone configs, fee schedules,
-- parameters) per zone or per node. Nodes receive their effective documents in their signed desired
-- state and write each to <state-dir>/config/<name>.json. Documents are never changed or deleted:
-- a push adds the next version.
CREATE TABLE config_docs (
  -- HQ-wide push order: a node's config version is the highest seq among its effective documents.
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  scope text NOT NULL CHECK (scope IN ('zone', 'node')),
  -- The zone (CH/FINMA) or the node id (CH-ZUG-01).
  target text NOT NULL CHECK ((scope = 'zone' AND target ~ '^[A-Z]{2}/[A-Z]+$') OR (scope = 'node' AND target ~ '^[A-Z]{2}-[A-Z0-9]{2,8}-\d{2,3}$')),
  -- A file name on the node: <name>.json under its config dir.
  name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$' AND position('..' IN name) = 0),
  version integer NOT NULL CHECK (version >= 1),
  content jsonb NOT NULL,
  -- Lowercase hex SHA-256 of the RFC 8785 JSON of content: the bytes the node writes.
  sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL,
  -- Also the index every lookup uses (scope and target, newest version per name).
  UNIQUE (scope, target, name, version)
);

-- The one rule of a node's effective config, used by desired states, pushes and the trigger below:
-- for each name, the newest node document if there is one, else the newest document of its zone.
CREATE FUNCTION jil_node_config_docs(p_node text, p_zone text) RETURNS SETOF config_docs LANGUAGE sql STABLE AS $$
  SELECT DISTINCT ON (d.name) d.* FROM config_docs d
   WHERE (d.scope = 'node' AND d.target = p_node) OR (d.scope = 'zone' AND d.target = p_zone)
   ORDER BY d.name, (d.scope = 'node') DESC, d.version DESC
$$;

CREATE FUNCTION jil_node_config_version(p_node text, p_zone text) RETURNS integer LANGUAGE sql STABLE AS $$
  SELECT coalesce(max(seq), 0)::integer FROM jil_node_config_docs(p_node, p_zone)
$$;

-- nodes.config_version (migration 006) is what desired states carry. A push recomputes it for the
-- nodes it reaches; a node admitted after a push to its zone (or re-admitted into another zone)
-- gets it here, so its first desired state names the config it is handed.
CREATE FUNCTION jil_nodes_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.config_version := jil_node_config_version(NEW.id, NEW.zone);
  RETURN NEW;
END
$$;
CREATE TRIGGER nodes_config_version BEFORE INSERT OR UPDATE OF zone ON nodes
  FOR EACH ROW EXECUTE FUNCTION jil_nodes_config_version();
