-- 0004_sync_intake: crm.sync.requested becomes a sync_queue job.
--
-- The requests stay on the timeline like every event; a job carries the
-- NEWEST request of its entity (operation and time), found through this
-- index, so a request that arrives late never overrides a newer one (an old
-- upsert after a delete must not bring the object back).
CREATE INDEX outreach_activities_sync_entity_idx
  ON outreach_activities ((details->>'entity_type'), (details->>'entity_id'), occurred_at)
  WHERE type = 'crm.sync.requested';
