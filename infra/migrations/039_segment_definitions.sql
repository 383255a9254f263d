-- Segment definitions (issue 16.1): one row per segment with its current rule, and every version it ever had.
-- Evaluation (membership, segment.membership.v1) comes later and reads these; the rule's JSON Schema is
-- schemas/segment-definition.v1.json, checked by @crm/segment-definitions before anything is written here.
CREATE TABLE segment_definitions (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_id uuid NOT NULL REFERENCES businesses (id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
  -- 1 on creation, +1 on every change (rule, name or status); the row of segment_definition_versions with the
  -- same number holds exactly this state
  version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  definition  jsonb NOT NULL,
  status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  -- the target of the history's foreign key: a version row can only belong to a segment of its own business
  UNIQUE (business_id, id)
);
CREATE INDEX segment_definitions_business_idx ON segment_definitions (business_id, created_at);

CREATE TABLE segment_definition_versions (
  business_id uuid NOT NULL,
  segment_id  uuid NOT NULL,
  version     integer NOT NULL,
  name        text NOT NULL,
  definition  jsonb NOT NULL,
  status      text NOT NULL CHECK (status IN ('active', 'archived')),
  -- the user whose request made this version (null from the admin CLI)
  changed_by  uuid,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (segment_id, version),
  FOREIGN KEY (business_id, segment_id) REFERENCES segment_definitions (business_id, id) ON DELETE CASCADE
);

ALTER TABLE segment_definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE segment_definitions FORCE ROW LEVEL SECURITY;
ALTER TABLE segment_definition_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE segment_definition_versions FORCE ROW LEVEL SECURITY;
-- No DELETE: a segment is archived, and its history is kept.
GRANT SELECT, INSERT, UPDATE ON segment_definitions TO crm_service;
GRANT SELECT, INSERT ON segment_definition_versions TO crm_service;
