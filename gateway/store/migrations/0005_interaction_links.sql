-- 0005: an overflowed call leaves an interaction at both sites; these link the two legs.

ALTER TABLE interactions ADD COLUMN handoff_id  TEXT;  -- the handoff id both sites share
ALTER TABLE interactions ADD COLUMN overflow_to TEXT;  -- sending site: where the call went
ALTER TABLE interactions ADD COLUMN from_site   TEXT;  -- receiving site: where it came from

CREATE INDEX interactions_handoff ON interactions (handoff_id);
