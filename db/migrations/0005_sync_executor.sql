-- 0005_sync_executor: the HubSpot sync executor's claims, and HubSpot's
-- request budget shared by every instance.
--
-- A claim is identified by (lease_owner, claimed_at): every outcome is
-- written only where both still match, so a worker whose lease ran out and
-- was taken over can never overwrite the new owner's result.
--
-- in_doubt: the job's last attempt may have reached HubSpot without its
-- answer being recorded (a crash, a timeout, an answer that could not be
-- read). The next attempt reads the objects back first and pushes only what
-- HubSpot does not already hold, so a crash never pushes a job twice.
ALTER TABLE sync_queue
  ADD COLUMN claimed_at timestamptz,
  ADD COLUMN in_doubt boolean NOT NULL DEFAULT false;

-- The claim: due pending jobs of one type in order, read from the index
-- until the batch is full (never the whole backlog). The jobs of one entity: one job per
-- entity at a time, a company before its deals and contacts, and the
-- enqueue's "is there a newer job" check (which read the whole table
-- without it).
CREATE INDEX sync_queue_due_idx ON sync_queue (entity_type, next_attempt_at, id)
  WHERE status = 'pending';
CREATE INDEX sync_queue_entity_idx ON sync_queue (entity_type, entity_id, requested_at);

-- The HubSpot company id a contact or deal was last associated with, so the
-- association is made once per company, not on every push.
ALTER TABLE contacts ADD COLUMN hubspot_company_link text;
ALTER TABLE deals ADD COLUMN hubspot_company_link text;

-- Wakes the executors when a job becomes due now (folded per transaction).
CREATE FUNCTION crm_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('crm_sync', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER sync_queue_notify
  AFTER INSERT OR UPDATE OF status, next_attempt_at ON sync_queue
  FOR EACH ROW WHEN (NEW.status = 'pending')
  EXECUTE FUNCTION crm_sync_notify();

-- Every request sent to a rate-limited API, for a rolling-window budget
-- shared by all instances (HubSpot counts per app, not per process). A
-- request is written here, under the lock of the API's api_slots row, before
-- it is sent, and moved to the time its answer came once it did: the window
-- holds it from no earlier than the API saw it, however long the request
-- took to get there. Rows older than any window are pruned as it goes.
CREATE TABLE api_requests (
  id   bigserial PRIMARY KEY,
  api  text NOT NULL,
  at   timestamptz NOT NULL
);
CREATE INDEX api_requests_api_at_idx ON api_requests (api, at);

-- The window the API itself announced (HubSpot's X-HubSpot-RateLimit-Max
-- and -Interval-Milliseconds, and the share of it left to us), so that
-- every instance keeps to what any of them learned.
ALTER TABLE api_slots
  ADD COLUMN window_max integer,
  ADD COLUMN window_ms integer;

INSERT INTO api_slots (api) VALUES ('hubspot') ON CONFLICT (api) DO NOTHING;
