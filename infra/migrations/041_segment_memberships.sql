-- Segment membership (issue 16.2-16.5): the state services/segments keeps per (segment, contact), and the
-- resumable jobs that compute it from stored history when a definition is created, edited or archived.
-- Functions (the sweep's and the job finder's cross-tenant reads) live in infra/sql/40_segments.sql.

-- One row per (segment, contact) that is a member, or that is not but could become one with time alone
-- (next_check_at set, e.g. "no login in 14 days" for a contact whose last login was 3 days ago). Absent = not a
-- member and nothing scheduled. The result is always the compiled definition evaluated at `evaluated_at`.
CREATE TABLE segment_memberships (
  business_id     uuid NOT NULL,
  segment_id      uuid NOT NULL,
  -- erasure (issue 18) removes the contact's membership with it
  contact_id      uuid NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
  is_member       boolean NOT NULL,
  -- the segment's version this result was computed with
  segment_version integer NOT NULL,
  -- when the contact last entered or exited (published as `at`)
  changed_at      timestamptz NOT NULL,
  evaluated_at    timestamptz NOT NULL,
  -- the earliest time the result can change without a new event or contact change; the sweep re-evaluates due rows
  next_check_at   timestamptz,
  PRIMARY KEY (segment_id, contact_id),
  FOREIGN KEY (business_id, segment_id) REFERENCES segment_definitions (business_id, id) ON DELETE CASCADE
);
CREATE INDEX segment_memberships_due_idx ON segment_memberships (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX segment_memberships_business_due_idx ON segment_memberships (business_id, next_check_at)
  WHERE next_check_at IS NOT NULL;
CREATE INDEX segment_memberships_contact_idx ON segment_memberships (contact_id);
CREATE INDEX segment_memberships_members_idx ON segment_memberships (segment_id, contact_id) WHERE is_member;
ALTER TABLE segment_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE segment_memberships FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON segment_memberships TO crm_service;

-- The job that brings a segment's memberships to its current definition: evaluate every contact of the business,
-- page by page in contact id order (`cursor` = last contact done), each page in one transaction with its
-- membership changes and outbox rows, so a crash resumes at the cursor with nothing published twice or missed.
CREATE TABLE segment_jobs (
  segment_id  uuid PRIMARY KEY,
  business_id uuid NOT NULL,
  -- backfill (first version: publishes entries only), edit (publishes the differences), archive (exits)
  kind        text NOT NULL CHECK (kind IN ('backfill', 'edit', 'archive')),
  -- the definition version being reconciled to
  version     integer NOT NULL,
  -- the versions of the segments it names, transitively ("id:version,..."): an edit of one of them re-runs it
  inputs      text NOT NULL DEFAULT '',
  cursor      uuid,
  done_at     timestamptz,
  started_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (business_id, segment_id) REFERENCES segment_definitions (business_id, id) ON DELETE CASCADE
);
ALTER TABLE segment_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE segment_jobs FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON segment_jobs TO crm_service;
