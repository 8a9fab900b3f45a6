-- 0002: an overflowed call leaves an interaction at each site it passed; the handoff id both
-- share links them (the sending site's row says overflow_to, the receiving one's from_site).

ALTER TABLE interactions ADD COLUMN handoff_id TEXT;
CREATE INDEX interactions_handoff ON interactions (handoff_id);
