-- 0002_outreach_projections: the timeline becomes the source of truth.
--
-- Every table an outreach event touches (prospects, email/sms/call
-- activities, deals' stage, customers, subscriptions, pipeline_stages, the
-- automatic follow-ups and the notification outbox) is recomputed, for the
-- rows a batch touched, from the set of events on the outreach_activities
-- timeline (db/projections.cc). A set has no order, so the result cannot
-- depend on the order, the duplicates or the batch cuts the events arrived
-- in: that is how the invariant of SPEC.md §5 holds by construction.
--
-- This migration adds what the recomputation needs to find an event's rows
-- quickly and to link events that arrive before the event that names them.

-- What an event is about, so "every event of email X" is an index scan.
--   entity_type: email, sms, call, deal, customer (payments and
--   cancellations, keyed by prospect), or NULL (crm.prospect.discovered).
--   entity_id:   the email/sms/call/deal id; NULL for a SendGrid event that
--   carries neither custom args nor a known message id yet (an orphan, linked
--   when its crm.email.sent arrives).
--   provider_message_id: SendGrid's X-Message-Id (the sg_message_id prefix),
--   the key that links such orphans.
--   prospect_inferred: prospect_id was not in the event but taken from the
--   entity's other events (an email event naming only the email). Inferred
--   values are recomputed when a better-placed event arrives; stated ones
--   never change.
ALTER TABLE outreach_activities
  ADD COLUMN entity_type          text,
  ADD COLUMN entity_id            text,
  ADD COLUMN provider_message_id  text,
  ADD COLUMN prospect_inferred    boolean NOT NULL DEFAULT false;
CREATE INDEX outreach_activities_entity_idx
  ON outreach_activities (entity_type, entity_id);
CREATE INDEX outreach_activities_provider_message_idx
  ON outreach_activities (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- Apple Mail Privacy Protection pre-fetches every image: such opens
-- (sg_machine_open) are recorded here and never count as engagement.
ALTER TABLE email_activities
  ADD COLUMN open_count          integer NOT NULL DEFAULT 0,
  ADD COLUMN machine_opened_at   timestamptz,
  ADD COLUMN machine_open_count  integer NOT NULL DEFAULT 0,
  ADD COLUMN spam_reported_at    timestamptz;

-- SMS replies count toward the lead score like email replies.
ALTER TABLE prospects
  ADD COLUMN sms_replied_count   integer NOT NULL DEFAULT 0;

-- Automatic follow-ups know what scheduled them:
--   email_id / call_id: the email whose sequence this is, the call this
--   reminds of; source_time: the event time of what scheduled it (a reply
--   only cancels follow-ups scheduled before it); cancelled_by_event: the
--   event that cancelled it, so that a late-arriving earlier cancelling event
--   can take its place and the row ends the same whatever the order.
ALTER TABLE followups
  ADD COLUMN email_id            text,
  ADD COLUMN call_id             text,
  ADD COLUMN source_time         timestamptz,
  ADD COLUMN cancelled_by_event  text;
CREATE INDEX followups_call_idx ON followups (call_id) WHERE call_id IS NOT NULL;
