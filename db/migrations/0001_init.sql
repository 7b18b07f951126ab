-- 0001_init: the whole CRM schema crm-worker reads and writes.
--
-- Applied by `crm-worker migrate` / at the start of `crm-worker run` inside one
-- transaction, together with its schema_migrations row (that table is created
-- by the migration runner itself, because it must exist before this file
-- runs). Once released, this file must never change: the runner refuses to
-- start when the recorded checksum differs. Changes go into 0002_*.sql etc.
--
-- Conventions, and why:
--  * Times are timestamptz: events carry RFC 3339 times with offsets, and the
--    timers compare against the database's now(), never a worker's clock.
--  * Statuses are text with a CHECK listing the allowed values, so a typo in a
--    handler fails loudly (SQLSTATE 23514) instead of writing a state that no
--    query will ever match. The order of the values is documented next to
--    each column; the handlers enforce "only move forward".
--  * Counters are `integer not null default 0` so `x = x + 1` never meets NULL.
--  * No foreign keys between event-fed tables. Events arrive in any order and
--    may be redelivered (an email event can come before its prospect's
--    `crm.prospect.discovered`); a foreign key would turn a legal order into
--    an error. Handlers create stub rows instead. The only foreign keys are
--    where the web app's own writes guarantee the order (see contacts, deals).

------------------------------------------------------------------------------
-- Prospects and their activity (written by the event handlers)
------------------------------------------------------------------------------

-- One row per prospect: the funnel status, engagement counters and score.
-- Written by every outreach handler. A row may start as a stub (only id, from
-- an email/SMS/call event) and is enriched by `crm.prospect.discovered`, so
-- name is nullable.
CREATE TABLE prospects (
  id                       text PRIMARY KEY,
  name                     text,
  email                    text,
  phone                    text,
  company                  text,
  source                   text,
  category                 text,
  urgency                  text,
  -- new < contacted < replied < scheduled < proposal < closed_won | closed_lost
  -- (both closed stages are terminal).
  sales_status             text NOT NULL DEFAULT 'new'
    CHECK (sales_status IN ('new', 'contacted', 'replied', 'scheduled',
                            'proposal', 'closed_won', 'closed_lost')),
  -- none < sent < delivered < opened < clicked < replied
  email_status             text NOT NULL DEFAULT 'none'
    CHECK (email_status IN ('none', 'sent', 'delivered', 'opened', 'clicked',
                            'replied')),
  -- Non-null once the prospect bounced, unsubscribed or reported spam: no
  -- more email to them, ever (terminal). The reason is the first one seen.
  email_suppressed_reason  text,
  email_suppressed_at      timestamptz,
  lead_score               integer NOT NULL DEFAULT 0,
  last_contact_at          timestamptz,
  next_follow_up_at        timestamptz,
  emails_sent_count        integer NOT NULL DEFAULT 0,
  emails_opened_count      integer NOT NULL DEFAULT 0,
  emails_clicked_count     integer NOT NULL DEFAULT 0,
  emails_replied_count     integer NOT NULL DEFAULT 0,
  calls_scheduled_count    integer NOT NULL DEFAULT 0,
  calls_completed_count    integer NOT NULL DEFAULT 0,
  deal_value               numeric,
  -- Time of the newest `crm.prospect.discovered` applied: an older discovered
  -- event arriving late must not overwrite newer profile fields.
  profile_updated_at       timestamptz,
  created_at               timestamptz NOT NULL DEFAULT now(),
  updated_at               timestamptz NOT NULL DEFAULT now()
);

-- One row per email (`email_id`). Written by the crm.email.* handlers (from
-- crm.outreach.events and from mapped SendGrid webhook events) and by the
-- follow-up sender, whose emails use the follow-up's id as email_id. A row may
-- be created by any of its events (e.g. `opened` before `sent`).
CREATE TABLE email_activities (
  id                   text PRIMARY KEY,
  -- Nullable: a SendGrid event may only name the message, not the prospect.
  prospect_id          text,
  provider_message_id  text,
  template             text,
  subject              text,
  sequence_step        integer,
  -- Set when the email was sent by a follow-up (then id = followup id too).
  followup_id          text,
  -- sent < delivered < opened < clicked < replied; bounced and failed
  -- (dropped) are terminal. NULL only while the sole event known for this
  -- email carries no status (unsubscribed, spam_reported).
  status               text
    CHECK (status IN ('sent', 'delivered', 'opened', 'clicked', 'replied',
                      'bounced', 'failed')),
  -- The handler's numeric rank of `status`, so "only move forward" is one
  -- integer comparison in the UPDATE's WHERE clause.
  status_rank          integer NOT NULL DEFAULT 0,
  sent_at              timestamptz,
  delivered_at         timestamptz,
  opened_at            timestamptz,  -- first open
  clicked_at           timestamptz,  -- first click
  click_count          integer NOT NULL DEFAULT 0,
  replied_at           timestamptz,
  reply_text           text,
  bounced_at           timestamptz,
  bounce_reason        text,
  unsubscribed_at      timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_activities_prospect_idx ON email_activities (prospect_id);
-- SendGrid events without custom_args are matched by the sg_message_id prefix.
CREATE INDEX email_activities_provider_message_idx
  ON email_activities (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- One row per SMS (`sms_id`). Written by crm.sms.status / crm.sms.replied.
CREATE TABLE sms_activities (
  id           text PRIMARY KEY,
  prospect_id  text,
  -- Twilio order: queued < sent < delivered; undelivered and failed are
  -- terminal. NULL while only the reply is known.
  status       text
    CHECK (status IN ('queued', 'sent', 'delivered', 'undelivered', 'failed')),
  status_rank  integer NOT NULL DEFAULT 0,
  status_at    timestamptz,  -- event time of the status now stored
  body         text,         -- the prospect's reply
  replied_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_activities_prospect_idx ON sms_activities (prospect_id);

-- One row per call (`call_id`). Written by crm.call.scheduled / completed;
-- `completed` may arrive first and create the row.
CREATE TABLE call_activities (
  id            text PRIMARY KEY,
  prospect_id   text,
  -- scheduled < completed
  status        text NOT NULL DEFAULT 'scheduled'
    CHECK (status IN ('scheduled', 'completed')),
  scheduled_at  timestamptz,
  completed_at  timestamptz,
  duration_s    integer,
  notes         text,
  objections    text[],
  next_steps    text,
  outcome       text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_activities_prospect_idx ON call_activities (prospect_id);

-- A prospect who paid. Written by crm.payment.completed (created once per
-- prospect: prospect_id is the ON CONFLICT arbiter) and
-- crm.subscription.cancelled (churned), which may arrive first.
CREATE TABLE customers (
  id                text PRIMARY KEY,
  prospect_id       text NOT NULL UNIQUE,
  -- active < churned
  status            text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'churned')),
  amount            numeric,
  currency          text,
  plan              text,
  first_payment_id  text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  churned_at        timestamptz,
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Subscriptions of a customer. Written by crm.payment.completed (active) and
-- crm.subscription.cancelled (cancelled).
CREATE TABLE subscriptions (
  id            text PRIMARY KEY,
  customer_id   text,
  prospect_id   text,
  plan          text,
  -- active < cancelled
  status        text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'cancelled')),
  amount        numeric,
  currency      text,
  started_at    timestamptz,
  cancelled_at  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_prospect_idx ON subscriptions (prospect_id);
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id);

-- The timeline: one row per applied event. event_id is unique, so a
-- redelivered event can never add a second row (the "no double effect" check
-- of the test plan counts exactly this).
CREATE TABLE outreach_activities (
  id           bigserial PRIMARY KEY,
  event_id     text NOT NULL UNIQUE,
  prospect_id  text,
  type         text NOT NULL,
  occurred_at  timestamptz NOT NULL,
  details      jsonb NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outreach_activities_prospect_time_idx
  ON outreach_activities (prospect_id, occurred_at);

-- Stage history: one row per stage a prospect reached; stage_date is the
-- earliest time it was reached (upsert with least()), so the row is the same
-- whatever order the events came in. Every prospect has at least one row.
-- Stage names are the funnel's (discovered, contacted, replied, ...), left
-- unconstrained so a new stage needs no migration.
CREATE TABLE pipeline_stages (
  prospect_id  text NOT NULL,
  stage        text NOT NULL,
  stage_date   timestamptz NOT NULL,
  notes        text,
  PRIMARY KEY (prospect_id, stage)
);

-- The idempotency ledger: written in the same transaction as an event's
-- effects, so a redelivered event finds its row and changes nothing. Never
-- pruned: a replay of the whole topic must change nothing either.
CREATE TABLE processed_events (
  event_id      text PRIMARY KEY,
  topic         text,
  partition     integer,
  "offset"      bigint,
  event_type    text,
  processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Messages that could not be decoded or broke the contract. Written by the
-- consumer before the dead-letter produce and before the offset is stored;
-- read and marked for replay by `crm-worker dlq`.
CREATE TABLE dead_letters (
  -- "topic:partition:offset", or "topic:partition:offset#element" for one
  -- element of a SendGrid batch. Deterministic, so a crash between this row
  -- and the offset commit just bumps attempts instead of adding a row.
  id                   text PRIMARY KEY,
  topic                text NOT NULL,
  partition            integer NOT NULL,
  "offset"             bigint NOT NULL,
  element              integer NOT NULL DEFAULT -1,  -- -1: the whole message
  key                  text,
  -- The raw bytes: poison may be invalid UTF-8 or contain NUL, which text
  -- cannot hold.
  payload              bytea,
  headers              jsonb,
  reason               text NOT NULL,  -- stable token, e.g. not_json, too_large
  error                text NOT NULL,  -- for humans; never a secret
  event_id             text,           -- when the message got that far
  event_type           text,
  first_failed_at      timestamptz NOT NULL DEFAULT now(),
  last_failed_at       timestamptz NOT NULL DEFAULT now(),
  attempts             integer NOT NULL DEFAULT 1,
  replay_requested_at  timestamptz,
  replayed_at          timestamptz
);
-- What `dlq replay` has asked for and the worker has not replayed yet.
CREATE INDEX dead_letters_replay_idx
  ON dead_letters (replay_requested_at) WHERE replayed_at IS NULL;
-- "Every acknowledged event id is in processed_events or dead_letters".
CREATE INDEX dead_letters_event_idx ON dead_letters (event_id)
  WHERE event_id IS NOT NULL;

------------------------------------------------------------------------------
-- Records owned by the web app, synced to HubSpot
------------------------------------------------------------------------------

-- Companies, contacts and deals are written by the web app, which then
-- publishes crm.sync.requested; crm-worker writes the hubspot_* ids and sync
-- columns back, and applies changes made in HubSpot.
--
-- hubspot_sync_status is left unconstrained: its values belong to the sync
-- code (e.g. pending, synced, failed) and are not part of the contract.

CREATE TABLE companies (
  id                   text PRIMARY KEY,
  name                 text,
  domain               text,
  phone                text,
  city                 text,
  state                text,
  hubspot_company_id   text,
  hubspot_sync_status  text,
  last_hubspot_sync    timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
-- hubspot.object.changed names HubSpot's id; not unique, so a bad write-back
-- cannot wedge the sync of an unrelated row.
CREATE INDEX companies_hubspot_idx ON companies (hubspot_company_id)
  WHERE hubspot_company_id IS NOT NULL;

-- The foreign keys of contacts and deals to companies are safe because the
-- web app writes the company before the rows that name it, inside its own
-- transactions; nullable and ON DELETE SET NULL so that deleting a company in
-- the web app never fails or cascades into deleting sales history.
CREATE TABLE contacts (
  id                   text PRIMARY KEY,
  company_id           text REFERENCES companies (id) ON DELETE SET NULL,
  email                text,
  first_name           text,
  last_name            text,
  phone                text,
  hubspot_contact_id   text,
  hubspot_sync_status  text,
  last_hubspot_sync    timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_company_idx ON contacts (company_id);
CREATE INDEX contacts_hubspot_idx ON contacts (hubspot_contact_id)
  WHERE hubspot_contact_id IS NOT NULL;

-- Deals also receive crm.deal.stage_changed events, which may create the row
-- (company_id NULL then, so the foreign key never sees an unknown company).
CREATE TABLE deals (
  id                   text PRIMARY KEY,
  company_id           text REFERENCES companies (id) ON DELETE SET NULL,
  prospect_id          text,
  name                 text,
  stage                text,  -- HubSpot pipeline stage ids: not constrained
  amount               numeric,
  close_date           date,
  -- Event time of the stage now stored: the last writer by event time wins,
  -- whatever order the stage events arrive in.
  stage_changed_at     timestamptz,
  hubspot_deal_id      text,
  hubspot_sync_status  text,
  last_hubspot_sync    timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deals_company_idx ON deals (company_id);
CREATE INDEX deals_prospect_idx ON deals (prospect_id);
CREATE INDEX deals_hubspot_idx ON deals (hubspot_deal_id)
  WHERE hubspot_deal_id IS NOT NULL;

------------------------------------------------------------------------------
-- Work queues for external APIs (claimed with FOR UPDATE SKIP LOCKED)
------------------------------------------------------------------------------

-- HubSpot sync jobs. Enqueued by crm.sync.requested, claimed by the sync
-- workers of any instance. A job waiting for a retry stays 'pending' with a
-- later next_attempt_at; 'failed' is a permanent (4xx) failure and 'dead'
-- means retries are exhausted (both visible, redriven by an operator).
CREATE TABLE sync_queue (
  id                bigserial PRIMARY KEY,
  entity_type       text NOT NULL CHECK (entity_type IN ('company', 'contact', 'deal')),
  entity_id         text NOT NULL,
  operation         text NOT NULL CHECK (operation IN ('upsert', 'delete')),
  -- pending -> in_progress -> completed | failed | dead
  status            text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'dead')),
  attempts          integer NOT NULL DEFAULT 0,
  next_attempt_at   timestamptz NOT NULL DEFAULT now(),
  last_error        text,
  -- Event time of the newest request coalesced into this job, so an older
  -- request arriving late does not overwrite a newer operation.
  requested_at      timestamptz NOT NULL DEFAULT now(),
  source_event_id   text,
  lease_owner       text,
  lease_expires_at  timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
-- Coalescing: at most one pending job per entity. Enqueue with
--   INSERT ... ON CONFLICT (entity_type, entity_id) WHERE status = 'pending'
--   DO UPDATE ...
-- A job already in_progress does not absorb new requests: the change may have
-- come after the worker read the row, so a new pending job is added.
CREATE UNIQUE INDEX sync_queue_one_pending_idx
  ON sync_queue (entity_type, entity_id) WHERE status = 'pending';
CREATE INDEX sync_queue_status_next_idx ON sync_queue (status, next_attempt_at);
-- Reclaiming expired leases of crashed workers.
CREATE INDEX sync_queue_lease_idx ON sync_queue (lease_expires_at)
  WHERE status = 'in_progress';

-- Durable timers: follow-up emails, call reminders, stale-deal alerts.
-- Written by crm.followup.* and by the email/call handlers (automatic
-- sequences, with deterministic ids), fired by the follow-up workers.
-- A `crm.followup.cancelled` may arrive before its `scheduled`: it leaves a
-- cancelled tombstone (prospect, kind and due time unknown yet) that the late
-- `scheduled` fills in without reviving it, hence the nullable columns.
CREATE TABLE followups (
  id                   text PRIMARY KEY,
  prospect_id          text,
  kind                 text CHECK (kind IN ('email', 'call_reminder', 'stale_deal')),
  due_at               timestamptz,
  -- scheduled -> sending -> sent | failed | dead; cancelled from scheduled
  -- (or failed). A 'sending' row left by a crash is not retried
  -- automatically (at most one email): it is reported.
  status               text NOT NULL DEFAULT 'scheduled'
    CHECK (status IN ('scheduled', 'sending', 'sent', 'cancelled', 'failed',
                      'dead')),
  attempts             integer NOT NULL DEFAULT 0,
  -- After a retryable failure: not before this time. NULL means due_at.
  next_attempt_at      timestamptz,
  cancel_reason        text,
  provider_message_id  text,
  template             text,
  sequence_step        integer,
  source_event_id      text,
  lease_owner          text,
  lease_expires_at     timestamptz,
  last_error           text,
  sent_at              timestamptz,
  cancelled_at         timestamptz,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  -- A live timer must know whom, what and when.
  CONSTRAINT followups_scheduled_complete CHECK (
    status <> 'scheduled'
    OR (prospect_id IS NOT NULL AND kind IS NOT NULL AND due_at IS NOT NULL))
);
CREATE INDEX followups_status_due_idx ON followups (status, due_at);
-- Cancelling a prospect's pending follow-ups on reply/unsubscribe/close.
CREATE INDEX followups_prospect_idx ON followups (prospect_id);

-- The Slack outbox: notifications (reply received, call completed, payment,
-- lead score threshold) written by the handlers in the event's transaction,
-- with an id derived from the event so a redelivery adds nothing; sent at
-- most one per second by the notification worker.
CREATE TABLE notifications (
  id                text PRIMARY KEY,
  kind              text NOT NULL,
  prospect_id       text,
  payload           jsonb NOT NULL DEFAULT '{}',
  -- pending -> sending -> sent | failed | dead
  status            text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead')),
  attempts          integer NOT NULL DEFAULT 0,
  next_attempt_at   timestamptz NOT NULL DEFAULT now(),
  last_error        text,
  lease_owner       text,
  lease_expires_at  timestamptz,
  sent_at           timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_status_next_idx ON notifications (status, next_attempt_at);
