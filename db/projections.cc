#include "db/projections.h"

#include <algorithm>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <boost/json.hpp>

#include "db/text_array.h"

namespace crm::db {
namespace {

namespace json = boost::json;
using handlers::EntityType;

// Every statement takes each set as one parameter, so a batch of any size
// is one round trip per statement and nothing is ever spliced into SQL text:
// lists of ids as text arrays ($1::text[], db/text_array.h, which the
// planner estimates by their length), records as JSON.
//
// A batch should read the rows of the ids it touches, not whole tables,
// whatever the planner's statistics say: a growing table's are seconds to
// a doubling behind, and with them the planner hashed every email event of
// the timeline to find a batch's few, read every pending follow-up through
// the status indexes, and merge-joined the whole primary key of
// pipeline_stages. So each projection's history is read by a LATERAL
// subquery with OFFSET 0 (which the planner cannot turn into a join: it
// probes the index once per id); the follow-up lookups probe by id the
// same way, and test status with a CASE, which no index serves; and the
// stage write probes pipeline_stages with a scalar subquery. The other
// statements (inference, the HubSpot ids of deals, notifications) were
// seen to probe per id on their own. The test
// Applier.ABatchReadsItsProspectsRowsNotTheWholeTable counts what a batch
// reads under stale statistics.

constexpr const char* kRecordFacts = R"SQL(
WITH f AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS f(
    i int, event_id text, type text, topic text, part int, off bigint, t timestamptz,
    pid text, et text, eid text, pmid text, details jsonb)
), p AS (
  INSERT INTO processed_events (event_id, topic, partition, "offset", event_type)
  SELECT event_id, topic, part, off, type FROM f
  ON CONFLICT (event_id) DO NOTHING
  RETURNING event_id
), t AS (
  INSERT INTO outreach_activities
    (event_id, prospect_id, type, occurred_at, details, entity_type, entity_id, provider_message_id)
  SELECT f.event_id, f.pid, f.type, f.t, f.details, f.et, f.eid, f.pmid FROM f JOIN p USING (event_id)
  ON CONFLICT (event_id) DO NOTHING
  RETURNING event_id
)
SELECT f.i FROM f JOIN t USING (event_id)
)SQL";

// Transaction-scoped locks on the keys about to be recomputed, in one
// order, so two batches touching the same keys queue instead of
// interleaving their reads and writes. One lock per key (a 64-bit hash of
// "<kind>:<id>"): two batches wait on each other only if they share a key,
// so the lanes of one batch (and other instances) apply side by side.
constexpr const char* kLockKeys = R"SQL(
SELECT count(pg_advisory_xact_lock(k)) FROM (
  SELECT DISTINCT hashtextextended(x, 7) AS k
  FROM unnest($1::text[]) x
  ORDER BY 1) s
)SQL";

// Every transaction that locks keys holds this one first, shared. A batch
// with more keys than kLockBudget in its first round holds it exclusively
// instead, and no key: PostgreSQL's lock table is shared by every session
// (max_locks_per_transaction x max_connections entries, 6,400 by default)
// and a SendGrid message of 10,000 elements must not fill it.
constexpr const char* kLockWhole = "SELECT pg_advisory_xact_lock($1::bigint)";
constexpr const char* kLockWholeShared = "SELECT pg_advisory_xact_lock_shared($1::bigint)";
constexpr long long kWholeLock = 0x63726d2d6b657973;  // "crm-keys"
constexpr size_t kLockBudget = 1024;

// What later lock rounds of a batch would learn from the keys of its first
// round, read without locking: the email a SendGrid message id names, the
// deal of a HubSpot deal id, and every prospect an entity's events, deal or
// follow-up name. Pairs (first-round key, key it leads to).
constexpr const char* kRelatedKeys = R"SQL(
WITH e AS (SELECT DISTINCT et, eid FROM unnest($1::text[], $2::text[]) AS e(et, eid)),
linked AS (
  SELECT DISTINCT 'message:' || o.provider_message_id AS k, 'email' AS et, o.entity_id AS eid
  FROM outreach_activities o
  WHERE o.provider_message_id = ANY ($3::text[])
    AND o.type = 'crm.email.sent' AND o.entity_id IS NOT NULL),
by_hubspot AS (
  SELECT 'hubspot:deal:' || d.hubspot_deal_id AS k, 'deal' AS et, d.id AS eid
  FROM deals d WHERE d.hubspot_deal_id = ANY ($4::text[])),
ents AS (
  SELECT et || ':' || eid AS k, et, eid FROM e
  UNION ALL SELECT k, et, eid FROM linked
  UNION ALL SELECT k, et, eid FROM by_hubspot)
SELECT k, et || ':' || eid FROM ents WHERE k <> et || ':' || eid
UNION
SELECT ents.k, 'prospect:' || p.pid
FROM ents CROSS JOIN LATERAL (
  SELECT o.prospect_id FROM outreach_activities o
  WHERE o.entity_type = ents.et AND o.entity_id = ents.eid AND o.prospect_id IS NOT NULL
  UNION SELECT d.prospect_id FROM deals d WHERE ents.et = 'deal' AND d.id = ents.eid
  UNION SELECT f.prospect_id FROM followups f WHERE ents.et = 'followup' AND f.id = ents.eid) p(pid)
WHERE p.pid IS NOT NULL
)SQL";

// SendGrid events that named their email only by the message id take the
// email's id once a crm.email.sent with that message id is on the timeline.
constexpr const char* kLinkOrphans = R"SQL(
WITH m AS (
  SELECT provider_message_id, min(entity_id) AS email_id FROM outreach_activities
  WHERE provider_message_id = ANY ($1::text[])
    AND type = 'crm.email.sent' AND entity_id IS NOT NULL
  GROUP BY provider_message_id)
UPDATE outreach_activities o SET entity_id = m.email_id
FROM m
WHERE o.provider_message_id = m.provider_message_id
  -- Redundant, for the plan: the orphans are found by message id too
  -- (index), not by scanning every orphan on the timeline.
  AND o.provider_message_id = ANY ($1::text[])
  AND o.entity_type = 'email' AND o.entity_id IS NULL
RETURNING o.entity_id
)SQL";

// Events that do not name their prospect take the prospect of their entity:
// the one stated by the entity's creating event (email sent), else by its
// earliest event that states one, else (deals) the one the web app wrote on
// the deal. Returns the prospects that gained or lost an event, which must be
// recomputed too, and the events concerned.
constexpr const char* kInferProspects = R"SQL(
WITH k AS (
  SELECT DISTINCT et, eid FROM unnest($1::text[], $2::text[]) AS x(et, eid)
), owner AS MATERIALIZED (
  -- One index probe per entity, whatever the planner believes of the
  -- table: a join with an aggregate of all of them was planned as a
  -- nested loop over that aggregate (rows of k times rows of it).
  SELECT k.et AS entity_type, k.eid AS entity_id, COALESCE(
    (SELECT o.prospect_id FROM outreach_activities o
     WHERE o.entity_type = k.et AND o.entity_id = k.eid
       AND o.prospect_id IS NOT NULL AND NOT o.prospect_inferred
     ORDER BY (o.type = 'crm.email.sent') DESC, o.occurred_at, o.event_id
     LIMIT 1),
    (SELECT d.prospect_id FROM deals d WHERE k.et = 'deal' AND d.id = k.eid)) AS pid
  FROM k)
UPDATE outreach_activities o SET prospect_id = owner.pid, prospect_inferred = true
FROM owner, outreach_activities old
WHERE owner.pid IS NOT NULL
  AND old.id = o.id AND o.entity_type = owner.entity_type AND o.entity_id = owner.entity_id
  AND (o.prospect_id IS NULL OR o.prospect_inferred)
  AND o.prospect_id IS DISTINCT FROM owner.pid
RETURNING owner.pid, old.prospect_id, o.event_id
)SQL";

// email_activities. Ladder: sent 1 < delivered 2 < opened 3 < clicked 4 <
// replied 5; bounced / failed (dropped) are terminal (rank 6): the earliest
// one wins over everything. Machine opens never count as opens.
constexpr const char* kProjectEmails = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
ev AS (
  SELECT o.entity_id AS id, o.type, o.occurred_at AS t, o.event_id, o.details AS d,
         o.prospect_id, o.prospect_inferred, o.provider_message_id,
         (o.type = 'crm.email.opened' AND COALESCE((o.details->>'machine_open')::boolean, false)) AS machine
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.entity_type = 'email' AND o.entity_id = ids.id OFFSET 0) o  -- a probe per id
), a AS (
  SELECT id,
    (array_agg(prospect_id ORDER BY (type = 'crm.email.sent') DESC, t, event_id)
       FILTER (WHERE prospect_id IS NOT NULL AND NOT prospect_inferred))[1] AS prospect_id,
    (array_agg(provider_message_id ORDER BY t, event_id)
       FILTER (WHERE type = 'crm.email.sent' AND provider_message_id IS NOT NULL))[1] AS pmid,
    (array_agg(d->>'template' ORDER BY t, event_id)
       FILTER (WHERE type = 'crm.email.sent' AND d ? 'template'))[1] AS template,
    (array_agg(d->>'subject' ORDER BY t, event_id)
       FILTER (WHERE type = 'crm.email.sent' AND d ? 'subject'))[1] AS subject,
    (array_agg((d->>'sequence_step')::int ORDER BY t, event_id)
       FILTER (WHERE type = 'crm.email.sent' AND d ? 'sequence_step'))[1] AS sequence_step,
    min(t) FILTER (WHERE type = 'crm.email.sent') AS sent_at,
    min(t) FILTER (WHERE type = 'crm.email.delivered') AS delivered_at,
    min(t) FILTER (WHERE type = 'crm.email.opened' AND NOT machine) AS opened_at,
    count(*) FILTER (WHERE type = 'crm.email.opened' AND NOT machine) AS open_count,
    min(t) FILTER (WHERE machine) AS machine_opened_at,
    count(*) FILTER (WHERE machine) AS machine_open_count,
    min(t) FILTER (WHERE type = 'crm.email.clicked') AS clicked_at,
    count(*) FILTER (WHERE type = 'crm.email.clicked') AS click_count,
    min(t) FILTER (WHERE type = 'crm.email.replied') AS replied_at,
    (array_agg(d->>'reply_text' ORDER BY t, event_id)
       FILTER (WHERE type = 'crm.email.replied' AND d ? 'reply_text'))[1] AS reply_text,
    min(t) FILTER (WHERE type IN ('crm.email.bounced', 'crm.email.dropped')) AS bounced_at,
    (array_agg(d->>'reason' ORDER BY t, event_id)
       FILTER (WHERE type IN ('crm.email.bounced', 'crm.email.dropped')))[1] AS bounce_reason,
    (array_agg(CASE type WHEN 'crm.email.bounced' THEN 'bounced' ELSE 'failed' END ORDER BY t, event_id)
       FILTER (WHERE type IN ('crm.email.bounced', 'crm.email.dropped')))[1] AS terminal,
    min(t) FILTER (WHERE type = 'crm.email.unsubscribed') AS unsubscribed_at,
    min(t) FILTER (WHERE type = 'crm.email.spam_reported') AS spam_reported_at,
    max(CASE WHEN type = 'crm.email.sent' THEN 1
             WHEN type = 'crm.email.delivered' THEN 2
             WHEN type = 'crm.email.opened' AND NOT machine THEN 3
             WHEN type = 'crm.email.clicked' THEN 4
             WHEN type = 'crm.email.replied' THEN 5 ELSE 0 END) AS ladder
  FROM ev GROUP BY id)
INSERT INTO email_activities AS e (id, prospect_id, provider_message_id, template, subject,
  sequence_step, status, status_rank, sent_at, delivered_at, opened_at, open_count,
  machine_opened_at, machine_open_count, clicked_at, click_count, replied_at, reply_text,
  bounced_at, bounce_reason, unsubscribed_at, spam_reported_at)
SELECT id, prospect_id, pmid, template, subject, sequence_step,
  COALESCE(terminal, (ARRAY['sent', 'delivered', 'opened', 'clicked', 'replied'])[NULLIF(ladder, 0)]),
  CASE WHEN terminal IS NOT NULL THEN 6 ELSE ladder END,
  sent_at, delivered_at, opened_at, open_count, machine_opened_at, machine_open_count,
  clicked_at, click_count, replied_at, reply_text, bounced_at, bounce_reason,
  unsubscribed_at, spam_reported_at
FROM a
ON CONFLICT (id) DO UPDATE SET
  prospect_id = EXCLUDED.prospect_id, provider_message_id = EXCLUDED.provider_message_id,
  template = EXCLUDED.template, subject = EXCLUDED.subject,
  sequence_step = EXCLUDED.sequence_step, status = EXCLUDED.status,
  status_rank = EXCLUDED.status_rank, sent_at = EXCLUDED.sent_at,
  delivered_at = EXCLUDED.delivered_at, opened_at = EXCLUDED.opened_at,
  open_count = EXCLUDED.open_count, machine_opened_at = EXCLUDED.machine_opened_at,
  machine_open_count = EXCLUDED.machine_open_count, clicked_at = EXCLUDED.clicked_at,
  click_count = EXCLUDED.click_count, replied_at = EXCLUDED.replied_at,
  reply_text = EXCLUDED.reply_text, bounced_at = EXCLUDED.bounced_at,
  bounce_reason = EXCLUDED.bounce_reason, unsubscribed_at = EXCLUDED.unsubscribed_at,
  spam_reported_at = EXCLUDED.spam_reported_at, updated_at = now()
)SQL";

// sms_activities. Ladder: queued 1 < sent 2 < delivered 3; undelivered and
// failed are terminal (rank 4, the earliest wins). status_at is the time of
// the event that set the status: the earliest one of the highest rank.
constexpr const char* kProjectSms = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
ev AS (
  SELECT o.entity_id AS id, o.type, o.occurred_at AS t, o.event_id, o.details AS d,
         o.prospect_id, o.prospect_inferred,
         CASE WHEN o.type <> 'crm.sms.status' THEN 0
              WHEN o.details->>'status' IN ('undelivered', 'failed') THEN 4
              ELSE array_position(ARRAY['queued', 'sent', 'delivered'], o.details->>'status') END AS rank
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.entity_type = 'sms' AND o.entity_id = ids.id OFFSET 0) o  -- a probe per id
), a AS (
  SELECT id,
    (array_agg(prospect_id ORDER BY t, event_id)
       FILTER (WHERE prospect_id IS NOT NULL AND NOT prospect_inferred))[1] AS prospect_id,
    (array_agg(d->>'status' ORDER BY t, event_id) FILTER (WHERE rank = 4))[1] AS terminal,
    (array_agg(d->>'status' ORDER BY rank DESC, t, event_id) FILTER (WHERE rank > 0))[1] AS status,
    (array_agg(t ORDER BY rank = 4 DESC, rank DESC, t, event_id) FILTER (WHERE rank > 0))[1] AS status_at,
    max(rank) AS rank,
    (array_agg(d->>'body' ORDER BY t, event_id) FILTER (WHERE type = 'crm.sms.replied'))[1] AS body,
    min(t) FILTER (WHERE type = 'crm.sms.replied') AS replied_at
  FROM ev GROUP BY id)
INSERT INTO sms_activities AS s (id, prospect_id, status, status_rank, status_at, body, replied_at)
SELECT id, prospect_id, COALESCE(terminal, status), rank, status_at, body, replied_at FROM a
ON CONFLICT (id) DO UPDATE SET
  prospect_id = EXCLUDED.prospect_id, status = EXCLUDED.status,
  status_rank = EXCLUDED.status_rank, status_at = EXCLUDED.status_at, body = EXCLUDED.body,
  replied_at = EXCLUDED.replied_at, updated_at = now()
)SQL";

// call_activities. scheduled < completed. A reschedule is a newer
// crm.call.scheduled: the newest scheduled_at wins; the completion details
// come from the newest crm.call.completed.
constexpr const char* kProjectCalls = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
ev AS (
  SELECT o.entity_id AS id, o.type, o.occurred_at AS t, o.event_id, o.details AS d,
         o.prospect_id, o.prospect_inferred
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.entity_type = 'call' AND o.entity_id = ids.id OFFSET 0) o  -- a probe per id
), a AS (
  SELECT id,
    (array_agg(prospect_id ORDER BY (type = 'crm.call.scheduled') DESC, t, event_id)
       FILTER (WHERE prospect_id IS NOT NULL AND NOT prospect_inferred))[1] AS prospect_id,
    (array_agg((d->>'scheduled_at')::timestamptz ORDER BY t DESC, event_id DESC)
       FILTER (WHERE type = 'crm.call.scheduled'))[1] AS scheduled_at,
    (array_agg(d ORDER BY t DESC, event_id DESC) FILTER (WHERE type = 'crm.call.completed'))[1] AS done
  FROM ev GROUP BY id)
INSERT INTO call_activities AS c (id, prospect_id, status, scheduled_at, completed_at, duration_s,
  notes, objections, next_steps, outcome)
SELECT id, prospect_id, CASE WHEN done IS NULL THEN 'scheduled' ELSE 'completed' END, scheduled_at,
  (done->>'completed_at')::timestamptz, (done->>'duration_s')::int, done->>'notes',
  CASE WHEN done ? 'objections'
       THEN ARRAY(SELECT jsonb_array_elements_text(done->'objections')) END,
  done->>'next_steps', done->>'outcome'
FROM a
ON CONFLICT (id) DO UPDATE SET
  prospect_id = EXCLUDED.prospect_id, status = EXCLUDED.status,
  scheduled_at = EXCLUDED.scheduled_at, completed_at = EXCLUDED.completed_at,
  duration_s = EXCLUDED.duration_s, notes = EXCLUDED.notes, objections = EXCLUDED.objections,
  next_steps = EXCLUDED.next_steps, outcome = EXCLUDED.outcome, updated_at = now()
)SQL";

// deals: stage, amount and close date, each the value of the newest change
// of that field from any source (ties by event id), recomputed from the set:
//   * crm.deal.stage_changed events of the deal (stage; amount when stated),
//     by their time;
//   * hubspot.object.changed of the deal's HubSpot object (found by
//     hubspot_deal_id) for dealstage, amount and closedate, by occurred_at,
//     only when newer than the row's updated_at: the web app's last write
//     wins over older HubSpot changes (SPEC.md §6). dealstage is mapped back
//     through $2 (HubSpot's id -> ours; unmapped ids kept as HubSpot's); a
//     cleared dealstage is no stage and is ignored, a cleared amount or
//     close date clears the column.
// A field no change reaches keeps its value (the web app's) and its
// <field>_changed_at becomes NULL. The web app's other columns (name,
// company) are left alone, and so is updated_at (migration 0006: it is the
// web app's time, the rule compares with it). Rows are written only for
// deals that exist or have events of their own: a HubSpot change never
// creates a deal.
constexpr const char* kProjectDeals = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
ev AS (
  SELECT o.entity_id AS id, o.occurred_at AS t, o.event_id, o.details AS d,
         o.prospect_id, o.prospect_inferred
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.entity_type = 'deal' AND o.entity_id = ids.id OFFSET 0) o  -- a probe per id
  WHERE o.type = 'crm.deal.stage_changed'
), hs AS (
  SELECT dl.id, (o.details->>'occurred_at')::timestamptz AS t, o.event_id,
         o.details->>'property' AS property, NULLIF(o.details->>'value', '') AS v
  FROM deals dl JOIN ids ON dl.id = ids.id
  JOIN outreach_activities o
    ON o.entity_type = 'hubspot' AND o.entity_id = 'deal:' || dl.hubspot_deal_id
  WHERE o.type = 'hubspot.object.changed'
    AND o.details->>'property' IN ('dealstage', 'amount', 'closedate')
    AND (o.details->>'occurred_at')::timestamptz > dl.updated_at
), c AS (
  SELECT id, 'stage' AS field, t, event_id, d->>'stage' AS v FROM ev
  UNION ALL
  SELECT id, 'amount', t, event_id, d->>'amount' FROM ev WHERE d ? 'amount'
  UNION ALL
  SELECT id, CASE property WHEN 'dealstage' THEN 'stage' WHEN 'amount' THEN 'amount'
                           ELSE 'close_date' END,
    t, event_id, CASE WHEN property = 'dealstage' THEN COALESCE($2::jsonb->>v, v) ELSE v END
  FROM hs WHERE property <> 'dealstage' OR v IS NOT NULL
), w AS (
  SELECT DISTINCT ON (id, field) id, field, t, v FROM c ORDER BY id, field, t DESC, event_id DESC
), a AS (
  SELECT ids.id,
    (SELECT (array_agg(ev.prospect_id ORDER BY ev.t, ev.event_id)
               FILTER (WHERE ev.prospect_id IS NOT NULL AND NOT ev.prospect_inferred))[1]
     FROM ev WHERE ev.id = ids.id) AS prospect_id,
    s.v AS stage, s.t AS stage_t, am.v::numeric AS amount, am.t AS amount_t,
    cd.v::date AS close_date, cd.t AS close_date_t
  FROM ids
  LEFT JOIN w s ON s.id = ids.id AND s.field = 'stage'
  LEFT JOIN w am ON am.id = ids.id AND am.field = 'amount'
  LEFT JOIN w cd ON cd.id = ids.id AND cd.field = 'close_date'
  WHERE EXISTS (SELECT 1 FROM ev WHERE ev.id = ids.id)
     OR EXISTS (SELECT 1 FROM deals WHERE deals.id = ids.id))
INSERT INTO deals AS dl (id, prospect_id, stage, stage_changed_at, amount, amount_changed_at,
  close_date, close_date_changed_at)
SELECT id, prospect_id, stage, stage_t, amount, amount_t, close_date, close_date_t FROM a
ON CONFLICT (id) DO UPDATE SET
  prospect_id = COALESCE(EXCLUDED.prospect_id, dl.prospect_id),
  stage = CASE WHEN EXCLUDED.stage_changed_at IS NULL THEN dl.stage ELSE EXCLUDED.stage END,
  stage_changed_at = EXCLUDED.stage_changed_at,
  amount = CASE WHEN EXCLUDED.amount_changed_at IS NULL THEN dl.amount ELSE EXCLUDED.amount END,
  amount_changed_at = EXCLUDED.amount_changed_at,
  close_date = CASE WHEN EXCLUDED.close_date_changed_at IS NULL THEN dl.close_date
                    ELSE EXCLUDED.close_date END,
  close_date_changed_at = EXCLUDED.close_date_changed_at
)SQL";

// The local deals that HubSpot deal ids ($1) name, with their prospects.
constexpr const char* kDealsOfHubspotIds = R"SQL(
SELECT id, prospect_id FROM deals
WHERE hubspot_deal_id = ANY ($1::text[])
)SQL";

// The HubSpot ids and prospects of local deals ($1).
constexpr const char* kDealsByIds = R"SQL(
SELECT hubspot_deal_id, prospect_id FROM deals
WHERE id = ANY ($1::text[])
)SQL";

// A prospect's deal_value follows its deals' amounts (the same sum as
// kProjectProspects), for prospects ($1) whose deals a HubSpot change may
// have moved without any event of theirs. Only existing prospects: a deal
// the web app wrote does not make its prospect exist.
constexpr const char* kRefreshDealValues = R"SQL(
UPDATE prospects p SET deal_value = v.total, updated_at = now()
FROM (SELECT s.pid, (SELECT sum(d.amount) FROM deals d WHERE d.prospect_id = s.pid) AS total
      FROM (SELECT DISTINCT x AS pid FROM unnest($1::text[]) x) s) v
WHERE p.id = v.pid AND p.deal_value IS DISTINCT FROM v.total
)SQL";

// customers and subscriptions, keyed by prospect. One subscription per
// (prospect, plan) that was paid for, id "<prospect>:<plan>" (plan "default"
// when the payment names none). It is cancelled when the newest cancellation
// for it (one naming its plan, or naming none) is not older than its newest
// payment; the customer is churned when it has a cancellation and no active
// subscription. The customer's amount / currency / plan are its first
// payment's.
constexpr const char* kProjectCustomers = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
ev AS (
  SELECT o.entity_id AS pid, o.type, o.occurred_at AS t, o.event_id, o.details AS d
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.entity_type = 'customer' AND o.entity_id = ids.id OFFSET 0) o  -- a probe per id
), pay AS (
  SELECT pid, COALESCE(d->>'plan', 'default') AS plan, min(t) AS started_at, max(t) AS last_paid,
    (array_agg((d->>'amount')::numeric ORDER BY t DESC, event_id DESC))[1] AS amount,
    (array_agg(d->>'currency' ORDER BY t DESC, event_id DESC))[1] AS currency
  FROM ev WHERE type = 'crm.payment.completed' GROUP BY 1, 2
), sub AS (
  SELECT pay.*,
    (SELECT max(c.t) FROM ev c WHERE c.pid = pay.pid AND c.type = 'crm.subscription.cancelled'
       AND (NOT c.d ? 'plan' OR c.d->>'plan' = pay.plan)) AS cancelled_t
  FROM pay
), subs AS (
  INSERT INTO subscriptions AS s (id, customer_id, prospect_id, plan, status, amount, currency,
    started_at, cancelled_at)
  SELECT pid || ':' || plan, pid, pid, plan,
    CASE WHEN cancelled_t >= last_paid THEN 'cancelled' ELSE 'active' END, amount, currency,
    started_at, CASE WHEN cancelled_t >= last_paid THEN cancelled_t END
  FROM sub
  ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
    started_at = EXCLUDED.started_at, cancelled_at = EXCLUDED.cancelled_at, updated_at = now()
), c AS (
  SELECT pid,
    (array_agg(d ORDER BY t, event_id) FILTER (WHERE type = 'crm.payment.completed'))[1] AS first,
    max(t) FILTER (WHERE type = 'crm.subscription.cancelled') AS last_cancel,
    (SELECT count(*) FROM sub WHERE sub.pid = ev.pid
       AND (sub.cancelled_t IS NULL OR sub.cancelled_t < sub.last_paid)) AS active_subs
  FROM ev GROUP BY pid)
INSERT INTO customers AS cu (id, prospect_id, status, amount, currency, plan, first_payment_id,
  churned_at)
SELECT pid, pid, CASE WHEN last_cancel IS NOT NULL AND active_subs = 0 THEN 'churned' ELSE 'active' END,
  (first->>'amount')::numeric, first->>'currency', first->>'plan', first->>'payment_id',
  CASE WHEN last_cancel IS NOT NULL AND active_subs = 0 THEN last_cancel END
FROM c
ON CONFLICT (prospect_id) DO UPDATE SET
  status = EXCLUDED.status, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
  plan = EXCLUDED.plan, first_payment_id = EXCLUDED.first_payment_id,
  churned_at = EXCLUDED.churned_at, updated_at = now()
)SQL";

// Every timer the timeline implies, for the touched rows, in one upsert
// with one rule for all of them: a row is written while it is pending
// (scheduled, or cancelled by an event: kCancelFollowups decides that
// again right after), never once an executor took it; moving its due time
// drops a send-window deferral or backoff made for the old one.
//
//   * the email sequence, one step at a time: an email that is not itself a
//     sequence step ($1) schedules step 1 ("<email>:followup:1", sent_at +
//     the first delay of $2, in ms); an email the executor sent for step n
//     (its email id is the step's row id) schedules step n + 1 at its own
//     sent_at + (delay n+1 − delay n), so a step that went out late keeps
//     the spacing. Every step keeps the root email's send time as its source
//     time: a reply after the first email stops the rest;
//   * call reminders ($3): "<call>:reminder", $4 ms before the call; source
//     time: the newest crm.call.scheduled;
//   * explicit timers ($5): the newest crm.followup.scheduled of each id
//     states whom, what and when; its time is the source time;
//   * stale-deal alerts, for the touched deals ($6) and the deals of the
//     touched prospects ($7), when $8 (ms) > 0: "<deal>:stale", $8 after the
//     last activity of the deal or its prospect (the source time).
// An explicit id equal to a generated one loses to the generated row.
constexpr const char* kScheduleFollowups = R"SQL(
WITH d AS (
  SELECT ms::bigint AS ms, step::int AS step
  FROM jsonb_array_elements_text($2::jsonb) WITH ORDINALITY AS s(ms, step)
), e AS (
  SELECT e.prospect_id, e.template, e.sent_at, COALESCE(fr.email_id, e.id) AS root,
         CASE WHEN fr.id IS NULL THEN 0 ELSE fr.sequence_step END AS step,
         COALESCE(fr.source_time, e.sent_at) AS source_time
  FROM email_activities e
  -- A probe of the primary key per email, whatever the statistics say
  -- (LIMIT keeps the planner from making it a join, which stale ones made
  -- a scan of every follow-up for each email).
  LEFT JOIN LATERAL (SELECT fr.id, fr.email_id, fr.sequence_step, fr.source_time FROM followups fr
                     WHERE fr.id = e.id AND fr.kind = 'email' LIMIT 1) fr ON true
  WHERE e.id = ANY ($1::text[])
    AND e.sent_at IS NOT NULL AND e.prospect_id IS NOT NULL
    AND (fr.id IS NOT NULL OR COALESCE(e.sequence_step, 0) = 0)
), explicit AS (
  SELECT DISTINCT ON (o.entity_id) o.entity_id AS id, o.prospect_id, o.details AS d,
    o.occurred_at, o.event_id
  FROM outreach_activities o
  WHERE o.entity_type = 'followup' AND o.type = 'crm.followup.scheduled'
    AND o.entity_id = ANY ($5::text[])
  ORDER BY o.entity_id, o.occurred_at DESC, o.event_id DESC
), stale AS (
  SELECT d.id, d.prospect_id, GREATEST(
    (SELECT max(o.occurred_at) FROM outreach_activities o WHERE o.prospect_id = d.prospect_id),
    (SELECT max(o.occurred_at) FROM outreach_activities o
      WHERE o.entity_type = 'deal' AND o.entity_id = d.id)) AS last
  FROM deals d
  WHERE $8::bigint > 0 AND d.prospect_id IS NOT NULL
    AND (d.id = ANY ($6::text[])
         OR d.prospect_id = ANY ($7::text[]))
), src (id, prospect_id, kind, due_at, template, sequence_step, email_id, call_id, deal_id,
        source_time, source_event_id) AS (
  SELECT e.root || ':followup:' || nxt.step, e.prospect_id, 'email',
    e.sent_at + GREATEST(nxt.ms - COALESCE(cur.ms, 0), 0) * interval '1 millisecond', e.template,
    nxt.step, e.root, NULL, NULL, e.source_time, NULL
  FROM e JOIN d nxt ON nxt.step = e.step + 1 LEFT JOIN d cur ON cur.step = e.step
  UNION ALL
  SELECT c.id || ':reminder', c.prospect_id, 'call_reminder',
    c.scheduled_at - $4::bigint * interval '1 millisecond', NULL, NULL, NULL, c.id, NULL,
    (SELECT max(o.occurred_at) FROM outreach_activities o
      WHERE o.entity_type = 'call' AND o.entity_id = c.id AND o.type = 'crm.call.scheduled'), NULL
  FROM call_activities c
  WHERE c.id = ANY ($3::text[])
    AND c.scheduled_at IS NOT NULL AND c.prospect_id IS NOT NULL
  UNION ALL
  SELECT x.id, x.prospect_id, x.d->>'kind', (x.d->>'due_at')::timestamptz, x.d->>'template',
    NULL, NULL, NULL, NULL, x.occurred_at, x.event_id
  FROM explicit x
  UNION ALL
  SELECT s.id || ':stale', s.prospect_id, 'stale_deal', s.last + $8::bigint * interval '1 millisecond',
    NULL, NULL, NULL, NULL, s.id, s.last, NULL
  FROM stale s WHERE s.last IS NOT NULL
)
INSERT INTO followups AS f (id, prospect_id, kind, due_at, status, template, sequence_step,
  email_id, call_id, deal_id, source_time, source_event_id)
SELECT DISTINCT ON (id) id, prospect_id, kind, due_at, 'scheduled', template, sequence_step,
  email_id, call_id, deal_id, source_time, source_event_id
FROM src
ORDER BY id, source_event_id IS NOT NULL
ON CONFLICT (id) DO UPDATE SET
  prospect_id = EXCLUDED.prospect_id, kind = EXCLUDED.kind, due_at = EXCLUDED.due_at,
  template = EXCLUDED.template, source_time = EXCLUDED.source_time,
  source_event_id = EXCLUDED.source_event_id, updated_at = now(),
  next_attempt_at = CASE WHEN f.due_at = EXCLUDED.due_at THEN f.next_attempt_at END
WHERE (f.status = 'scheduled' OR (f.status = 'cancelled' AND f.cancelled_by_event IS NOT NULL))
  AND (f.prospect_id, f.kind, f.due_at, f.template, f.source_time, f.source_event_id)
      IS DISTINCT FROM (EXCLUDED.prospect_id, EXCLUDED.kind, EXCLUDED.due_at, EXCLUDED.template,
                        EXCLUDED.source_time, EXCLUDED.source_event_id)
RETURNING f.id
)SQL";

// HubSpot sync jobs for the batch's new crm.sync.requested events ($1). A
// job carries the newest request of its entity on the whole timeline; a
// job is added or updated only when that request is newer than every job
// of the entity: the pending one absorbs it (ten requests, one push), and
// once a job is in progress or done a newer request makes a new pending
// job (the change may have come after the worker read the row). An older
// request arriving late adds nothing.
constexpr const char* kEnqueueSync = R"SQL(
WITH b AS (
  SELECT DISTINCT details->>'entity_type' AS et, details->>'entity_id' AS eid
  FROM outreach_activities
  WHERE event_id = ANY ($1::text[]) AND type = 'crm.sync.requested'
), newest AS (
  SELECT b.et, b.eid, n.operation, n.occurred_at, n.event_id
  FROM b CROSS JOIN LATERAL (
    SELECT o.details->>'operation' AS operation, o.occurred_at, o.event_id
    FROM outreach_activities o
    WHERE o.type = 'crm.sync.requested' AND o.details->>'entity_type' = b.et
      AND o.details->>'entity_id' = b.eid
    ORDER BY o.occurred_at DESC, o.event_id DESC LIMIT 1) n
)
INSERT INTO sync_queue AS q (entity_type, entity_id, operation, requested_at, source_event_id)
SELECT et, eid, operation, occurred_at, event_id FROM newest n
WHERE NOT EXISTS (
  SELECT 1 FROM sync_queue j
  WHERE j.entity_type = n.et AND j.entity_id = n.eid
    AND (j.requested_at, j.source_event_id) >= (n.occurred_at, n.event_id))
ON CONFLICT (entity_type, entity_id) WHERE status = 'pending' DO UPDATE SET
  operation = EXCLUDED.operation, requested_at = EXCLUDED.requested_at,
  source_event_id = EXCLUDED.source_event_id, updated_at = now()
)SQL";

// Re-evaluates the pending follow-ups of the prospects ($1) that gained or
// lost an event the rule reads, and the follow-ups ($2) made, moved or named
// by the batch, against the cancellation rule (migration 0003,
// crm_followup_cancellation: the earliest qualifying event). A row cancelled
// by an event is looked at again, so that an earlier qualifying event
// arriving late takes its place, and a row whose cancelling event no longer
// qualifies (it was rescheduled after it) is scheduled again: the result is
// a function of the set of events, whatever their order.
constexpr const char* kCancelFollowups = R"SQL(
WITH f AS (
  -- Two index lookups (a UNION, not an OR, which would scan the table).
  -- The status test is a CASE so that no index on status can serve it:
  -- statistics a few seconds old make "status = 'scheduled'" look like a
  -- handful of rows, and the plan then read every pending follow-up of
  -- the table (through the status indexes) for each batch.
  SELECT f.id, f.prospect_id, f.kind, f.email_id, f.call_id, f.deal_id, f.source_time,
    f.cancelled_by_event
  FROM followups f
  WHERE f.prospect_id = ANY ($1::text[])
    AND CASE f.status WHEN 'scheduled' THEN true
                      WHEN 'cancelled' THEN f.cancelled_by_event IS NOT NULL ELSE false END
  UNION
  SELECT f.id, f.prospect_id, f.kind, f.email_id, f.call_id, f.deal_id, f.source_time,
    f.cancelled_by_event
  FROM followups f
  WHERE f.id = ANY ($2::text[])
    AND CASE f.status WHEN 'scheduled' THEN true
                      WHEN 'cancelled' THEN f.cancelled_by_event IS NOT NULL ELSE false END
), c AS (
  -- The rows whose verdict changes.
  SELECT f.id, x.event_id, x.occurred_at, x.reason
  FROM f LEFT JOIN LATERAL crm_followup_cancellation(
    f.id, f.prospect_id, f.kind, f.email_id, f.call_id, f.deal_id, f.source_time) x ON true
  WHERE f.cancelled_by_event IS DISTINCT FROM x.event_id)
UPDATE followups SET
  status = CASE WHEN c.event_id IS NULL THEN 'scheduled' ELSE 'cancelled' END,
  cancel_reason = c.reason, cancelled_by_event = c.event_id, cancelled_at = c.occurred_at,
  updated_at = now()
FROM c
WHERE followups.id = c.id
  -- For the plan: the rows found by id, not every pending one by status.
  AND followups.id = ANY (ARRAY(SELECT c.id FROM c))
  -- Again here: an executor may have taken the row since the snapshot above.
  AND CASE followups.status WHEN 'scheduled' THEN true
                            WHEN 'cancelled' THEN followups.cancelled_by_event IS NOT NULL ELSE false END
RETURNING followups.prospect_id
)SQL";

// prospects and pipeline_stages, from the prospect's events and the rows
// recomputed above. $2: the lead-score weights (JSON object).
//
// Sales ladder: contacted 1 (email sent) < replied 2 (email or SMS reply) <
// scheduled 3 (call scheduled) < proposal 4 (call completed with outcome
// proposal_sent) < closed_won | closed_lost 5 (payment, deal closed). A
// "move" is an event, in time order, whose rank beats every earlier one; the
// closed stages share rank 5, so the first close is final. sales_status is
// the last move; pipeline_stages holds "discovered" (the first event of the
// prospect) and every move.
constexpr const char* kProjectProspects = R"SQL(
WITH ids AS (SELECT DISTINCT x AS id FROM unnest($1::text[]) x),
w AS (SELECT $2::jsonb AS w),
ev AS (
  SELECT o.prospect_id AS pid, o.type, o.occurred_at AS t, o.event_id, o.details AS d,
         o.entity_id,
         (o.type = 'crm.email.opened' AND COALESCE((o.details->>'machine_open')::boolean, false)) AS machine
  FROM ids CROSS JOIN LATERAL (SELECT * FROM outreach_activities o
    WHERE o.prospect_id = ids.id OFFSET 0) o  -- a probe per id
), ranked AS (
  SELECT pid, t, event_id, type,
    CASE WHEN type = 'crm.email.sent' THEN 1
         WHEN type IN ('crm.email.replied', 'crm.sms.replied') THEN 2
         WHEN type = 'crm.call.scheduled' THEN 3
         WHEN type = 'crm.call.completed' AND d->>'outcome' = 'proposal_sent' THEN 4
         WHEN type = 'crm.payment.completed' THEN 5
         WHEN type = 'crm.deal.stage_changed' AND d->>'stage' IN ('closed_won', 'closed_lost') THEN 5
         ELSE 0 END AS rank,
    CASE WHEN type = 'crm.email.sent' THEN 'contacted'
         WHEN type IN ('crm.email.replied', 'crm.sms.replied') THEN 'replied'
         WHEN type = 'crm.call.scheduled' THEN 'scheduled'
         WHEN type = 'crm.call.completed' THEN 'proposal'
         WHEN type = 'crm.payment.completed' THEN 'closed_won'
         ELSE d->>'stage' END AS stage
  FROM ev
), moves AS (
  SELECT pid, stage, t, type, rank FROM (
    SELECT r.*, max(rank) OVER (PARTITION BY pid ORDER BY t, event_id
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM ranked r WHERE rank > 0) x
  WHERE rank > COALESCE(before, 0)
), stage_rows AS (
  SELECT pid, 'discovered' AS stage, min(t) AS t, NULL::text AS notes FROM ev GROUP BY pid
  UNION ALL
  SELECT pid, stage, t, type FROM moves
), del AS (
  DELETE FROM pipeline_stages ps USING ids
  WHERE ps.prospect_id = ids.id
    AND NOT EXISTS (SELECT 1 FROM stage_rows r WHERE r.pid = ps.prospect_id AND r.stage = ps.stage)
), up AS (
  INSERT INTO pipeline_stages AS ps (prospect_id, stage, stage_date, notes)
  SELECT pid, stage, t, notes FROM stage_rows r
  -- Most rows are as they were: left out here, where ON CONFLICT would
  -- lock (and so write) each of them to find that out. A scalar subquery,
  -- not NOT EXISTS: that became a merge join reading the whole primary
  -- key of pipeline_stages for every batch; this probes it once a row.
  WHERE (SELECT (o.stage_date, o.notes) IS NOT DISTINCT FROM (r.t, r.notes) FROM pipeline_stages o
         WHERE o.prospect_id = r.pid AND o.stage = r.stage) IS NOT TRUE
  ON CONFLICT (prospect_id, stage) DO UPDATE SET
    stage_date = EXCLUDED.stage_date, notes = EXCLUDED.notes
  WHERE (ps.stage_date, ps.notes) IS DISTINCT FROM (EXCLUDED.stage_date, EXCLUDED.notes)
), sales AS (
  SELECT DISTINCT ON (pid) pid, stage FROM moves ORDER BY pid, rank DESC
), profile AS (
  -- Each field from the newest crm.prospect.discovered that has it: one
  -- sort of (event, field) pairs rather than one per field and prospect.
  SELECT pid,
    max(v) FILTER (WHERE k = 'name') AS name, max(v) FILTER (WHERE k = 'email') AS email,
    max(v) FILTER (WHERE k = 'phone') AS phone, max(v) FILTER (WHERE k = 'company') AS company,
    max(v) FILTER (WHERE k = 'source') AS source, max(v) FILTER (WHERE k = 'category') AS category,
    max(v) FILTER (WHERE k = 'urgency') AS urgency, max(v) FILTER (WHERE k = 'time_zone') AS time_zone
  FROM (
    SELECT DISTINCT ON (ev.pid, f.k) ev.pid, f.k, f.v
    FROM ev CROSS JOIN LATERAL jsonb_each_text(ev.d) AS f(k, v)
    WHERE ev.type = 'crm.prospect.discovered' AND jsonb_typeof(ev.d) = 'object'
      AND f.k IN ('name', 'email', 'phone', 'company', 'source', 'category', 'urgency', 'time_zone')
    ORDER BY ev.pid, f.k, ev.t DESC, ev.event_id DESC) newest
  GROUP BY pid
), engaged AS (
  -- Distinct entities per kind of engagement, counted without a
  -- count(DISTINCT) (a sort) per kind and prospect.
  SELECT pid,
    count(*) FILTER (WHERE type = 'crm.email.sent') AS sent,
    count(*) FILTER (WHERE type = 'crm.email.opened') AS opened,
    count(*) FILTER (WHERE type = 'crm.email.clicked') AS clicked,
    count(*) FILTER (WHERE type = 'crm.email.replied') AS replied,
    count(*) FILTER (WHERE type = 'crm.call.scheduled') AS calls_scheduled,
    count(*) FILTER (WHERE type = 'crm.call.completed') AS calls_completed
  FROM (
    SELECT DISTINCT pid, type, entity_id FROM ev
    WHERE entity_id IS NOT NULL AND NOT machine
      AND type IN ('crm.email.sent', 'crm.email.opened', 'crm.email.clicked', 'crm.email.replied',
                   'crm.call.scheduled', 'crm.call.completed')) e
  GROUP BY pid
), a AS (
  SELECT ids.id,
    max(t) FILTER (WHERE type = 'crm.prospect.discovered') AS profile_updated_at,
    max(CASE WHEN type = 'crm.email.sent' THEN 1
             WHEN type = 'crm.email.delivered' THEN 2
             WHEN type = 'crm.email.opened' AND NOT machine THEN 3
             WHEN type = 'crm.email.clicked' THEN 4
             WHEN type = 'crm.email.replied' THEN 5 ELSE 0 END) AS email_rank,
    (array_agg(substr(type, 11) ORDER BY t, event_id)
       FILTER (WHERE type IN ('crm.email.bounced', 'crm.email.dropped',
                              'crm.email.unsubscribed', 'crm.email.spam_reported')))[1] AS suppressed,
    min(t) FILTER (WHERE type IN ('crm.email.bounced', 'crm.email.dropped',
                                  'crm.email.unsubscribed', 'crm.email.spam_reported')) AS suppressed_at,
    max(t) FILTER (WHERE type IN ('crm.email.sent', 'crm.email.replied', 'crm.sms.replied',
                                  'crm.call.completed')
                      OR (type = 'crm.sms.status' AND d->>'status' IN ('sent', 'delivered')))
      AS last_contact_at,
    count(*) FILTER (WHERE type = 'crm.sms.replied') AS sms_replied
  FROM ids LEFT JOIN ev ON ev.pid = ids.id
  GROUP BY ids.id)
INSERT INTO prospects AS p (id, name, email, phone, company, source, category, urgency,
  time_zone, profile_updated_at, sales_status, email_status, email_suppressed_reason, email_suppressed_at,
  last_contact_at, next_follow_up_at, emails_sent_count, emails_opened_count,
  emails_clicked_count, emails_replied_count, sms_replied_count, calls_scheduled_count,
  calls_completed_count, deal_value, lead_score)
SELECT a.id, profile.name, profile.email, profile.phone, profile.company, profile.source,
  profile.category, profile.urgency, profile.time_zone,
  profile_updated_at,
  COALESCE(sales.stage, 'new'),
  (ARRAY['none', 'sent', 'delivered', 'opened', 'clicked', 'replied'])[COALESCE(email_rank, 0) + 1],
  suppressed, suppressed_at, last_contact_at,
  crm_next_follow_up(a.id),
  COALESCE(sent, 0), COALESCE(opened, 0), COALESCE(clicked, 0), COALESCE(replied, 0), sms_replied,
  COALESCE(calls_scheduled, 0), COALESCE(calls_completed, 0),
  (SELECT sum(amount) FROM deals d WHERE d.prospect_id = a.id),
  COALESCE(opened * (w->>'email_opened')::int + clicked * (w->>'email_clicked')::int
    + replied * (w->>'email_replied')::int + calls_scheduled * (w->>'call_scheduled')::int
    + calls_completed * (w->>'call_completed')::int, 0) + sms_replied * (w->>'sms_replied')::int
FROM a CROSS JOIN w LEFT JOIN sales ON sales.pid = a.id
  LEFT JOIN profile ON profile.pid = a.id LEFT JOIN engaged ON engaged.pid = a.id
ON CONFLICT (id) DO UPDATE SET
  name = COALESCE(EXCLUDED.name, p.name), email = COALESCE(EXCLUDED.email, p.email),
  phone = COALESCE(EXCLUDED.phone, p.phone), company = COALESCE(EXCLUDED.company, p.company),
  source = COALESCE(EXCLUDED.source, p.source), category = COALESCE(EXCLUDED.category, p.category),
  urgency = COALESCE(EXCLUDED.urgency, p.urgency),
  time_zone = COALESCE(EXCLUDED.time_zone, p.time_zone),
  profile_updated_at = EXCLUDED.profile_updated_at, sales_status = EXCLUDED.sales_status,
  email_status = EXCLUDED.email_status,
  email_suppressed_reason = EXCLUDED.email_suppressed_reason,
  email_suppressed_at = EXCLUDED.email_suppressed_at, last_contact_at = EXCLUDED.last_contact_at,
  next_follow_up_at = EXCLUDED.next_follow_up_at, emails_sent_count = EXCLUDED.emails_sent_count,
  emails_opened_count = EXCLUDED.emails_opened_count,
  emails_clicked_count = EXCLUDED.emails_clicked_count,
  emails_replied_count = EXCLUDED.emails_replied_count,
  sms_replied_count = EXCLUDED.sms_replied_count,
  calls_scheduled_count = EXCLUDED.calls_scheduled_count,
  calls_completed_count = EXCLUDED.calls_completed_count, deal_value = EXCLUDED.deal_value,
  lead_score = EXCLUDED.lead_score, updated_at = now()
)SQL";

// Slack notifications for the batch's new events that call for one. The id
// carries the event id, so a redelivery adds nothing. Only new events: turning
// notifications on must not queue a message for every old reply.
constexpr const char* kNotifyEvents = R"SQL(
INSERT INTO notifications AS n (id, kind, prospect_id, payload)
SELECT k.kind || ':' || o.event_id, k.kind, o.prospect_id,
  jsonb_build_object('event_id', o.event_id, 'type', o.type, 'occurred_at', o.occurred_at,
                     'entity_id', o.entity_id)
FROM outreach_activities o
JOIN (VALUES ('crm.email.replied', 'reply_received'), ('crm.sms.replied', 'reply_received'),
             ('crm.call.completed', 'call_completed'), ('crm.payment.completed', 'payment'))
  AS k(type, kind) ON k.type = o.type
WHERE o.event_id = ANY ($1::text[])
ON CONFLICT (id) DO NOTHING
)SQL";

// An event whose prospect was inferred after its notification was queued
// (an email reply naming only the email): the pending notification follows.
constexpr const char* kNotifyReinferred = R"SQL(
UPDATE notifications n SET prospect_id = o.prospect_id, updated_at = now()
FROM outreach_activities o
WHERE o.event_id = ANY ($1::text[])
  AND n.id = (CASE o.type WHEN 'crm.call.completed' THEN 'call_completed'
                          WHEN 'crm.payment.completed' THEN 'payment'
                          ELSE 'reply_received' END) || ':' || o.event_id
  AND n.status = 'pending' AND n.prospect_id IS DISTINCT FROM o.prospect_id
)SQL";

// One notification per prospect whose score reached the threshold ($2).
constexpr const char* kNotifyScores = R"SQL(
INSERT INTO notifications (id, kind, prospect_id, payload)
SELECT 'lead_score:' || p.id, 'lead_score', p.id, jsonb_build_object('threshold', $2::int)
FROM prospects p
WHERE p.id = ANY ($1::text[]) AND p.lead_score >= $2::int
ON CONFLICT (id) DO NOTHING
)SQL";


// Runs one of the statements above as a statement prepared on this
// connection (at its first use there): it is planned from the cache
// instead of from scratch each time, which cost a batch ~10 ms of planning,
// most of the time of a small one. PostgreSQL plans the first executions
// for their parameters and keeps a generic plan only when that one is
// estimated no worse.
template <typename... Args>
pqxx::result planned(pqxx::transaction_base& tx, const char* name, const char* sql, Args&&... args) {
  tx.conn().prepare(name, sql);  // the same definition again: nothing
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

// The locks one transaction takes, round after round ("<kind>:<id>" keys).
// Later rounds (keys learnt from the first writes) lock per key whatever
// their number: they are bounded by the first round's size, and a
// transaction that holds the whole lock shared must not ask for it
// exclusively (two such would deadlock).
class KeyLocks {
 public:
  explicit KeyLocks(pqxx::transaction_base& tx) : tx_(tx) {}
  void take(const std::set<std::string>& keys) {
    if (keys.empty() || whole_) return;
    if (!shared_) {
      if (keys.size() > kLockBudget) {
        planned(tx_, "crm_lock_whole", kLockWhole, kWholeLock);
        whole_ = true;
        return;
      }
      planned(tx_, "crm_lock_whole_shared", kLockWholeShared, kWholeLock);
      shared_ = true;
    }
    planned(tx_, "crm_lock_keys", kLockKeys, text_array(keys));
  }

 private:
  pqxx::transaction_base& tx_;
  bool shared_ = false;  // holds the whole lock shared, and keys
  bool whole_ = false;   // holds the whole lock exclusively: nothing else needed
};

struct Touched {
  std::set<std::string> emails, sms, calls, deals, customers, followups, prospects;
  // HubSpot objects, "<object_type>:<HubSpot id>".
  std::set<std::string> hubspot;
  std::set<std::string>* of(EntityType type) {
    switch (type) {
      case EntityType::kEmail: return &emails;
      case EntityType::kSms: return &sms;
      case EntityType::kCall: return &calls;
      case EntityType::kDeal: return &deals;
      case EntityType::kCustomer: return &customers;
      case EntityType::kFollowup: return &followups;
      case EntityType::kHubspot: return &hubspot;
      case EntityType::kNone: return nullptr;
    }
    return nullptr;
  }
};

// The event types crm_followup_cancellation reads (migrations 0003, 0009).
bool can_cancel_followups(std::string_view type) {
  static constexpr std::string_view kTypes[] = {
      "crm.followup.cancelled", "crm.email.replied",      "crm.sms.replied",
      "crm.email.bounced",      "crm.email.dropped",      "crm.email.unsubscribed",
      "crm.email.spam_reported", "crm.call.completed",    "crm.payment.completed",
      "crm.deal.stage_changed"};
  return std::find(std::begin(kTypes), std::end(kTypes), type) != std::end(kTypes);
}

std::string weights_json(const LeadScoreWeights& w) {
  json::object o;
  o["email_opened"] = w.email_opened;
  o["email_clicked"] = w.email_clicked;
  o["email_replied"] = w.email_replied;
  o["sms_replied"] = w.sms_replied;
  o["call_scheduled"] = w.call_scheduled;
  o["call_completed"] = w.call_completed;
  return json::serialize(o);
}

std::string stages_json(const std::map<std::string, std::string>& stages) {
  json::object o;
  for (const auto& [hubspot, ours] : stages) o[hubspot] = ours;
  return json::serialize(o);
}

constexpr std::string_view kHubspotDealPrefix = "deal:";

}  // namespace

ProjectionOptions projection_options(const Config& config) {
  ProjectionOptions o;
  o.email_sequence = config.followups.email_sequence;
  o.call_reminder_before = config.followups.call_reminder_before;
  o.stale_deal_after = config.followups.stale_deal_after;
  o.weights = config.lead_score.weights;
  o.score_threshold = config.lead_score.threshold;
  o.notify = config.slack.webhook_url.is_set();
  // check-config refuses a map where two of our stages share a HubSpot id,
  // so the reverse is a function.
  for (const auto& [ours, hubspot] : config.hubspot.deal_stages) o.hubspot_deal_stages[hubspot] = ours;
  return o;
}

void prefer_index_lookups(pqxx::transaction_base& tx) { tx.exec0("SET LOCAL enable_seqscan = off"); }

std::vector<std::string> analyze_grown_tables(pqxx::transaction_base& tx, long long min_changes) {
  static const std::set<std::string> kRead = {
      "outreach_activities", "processed_events", "prospects",     "pipeline_stages",
      "email_activities",    "sms_activities",   "call_activities", "customers",
      "subscriptions",       "deals",            "followups",     "notifications",
      "sync_queue"};
  std::vector<std::string> analysed;
  for (const auto& row : tx.exec_params("SELECT crm_analyze_grown($1::text[], $2::bigint)",
                                        text_array(kRead), min_changes)) {
    analysed.push_back(row[0].as<std::string>());
  }
  return analysed;
}

std::vector<bool> record_facts(pqxx::transaction_base& tx, const std::vector<FactRow>& rows) {
  std::vector<bool> fresh(rows.size(), false);
  if (rows.empty()) return fresh;
  json::array a;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Event& e = *rows[i].event;
    const handlers::Fact& f = *rows[i].fact;
    json::object o;
    o["i"] = i;
    o["event_id"] = e.id;
    o["type"] = e.type;
    o["topic"] = e.origin.topic;
    o["part"] = e.origin.partition;
    o["off"] = e.origin.offset;
    o["t"] = format_rfc3339(e.time);
    if (f.prospect_id) o["pid"] = *f.prospect_id;
    if (const char* et = handlers::to_string(f.entity_type)) o["et"] = et;
    if (f.entity_id) o["eid"] = *f.entity_id;
    if (f.provider_message_id) o["pmid"] = *f.provider_message_id;
    o["details"] = f.details;
    a.push_back(std::move(o));
  }
  for (const auto& row : planned(tx, "crm_record_facts", kRecordFacts, json::serialize(a))) {
    fresh.at(row[0].as<size_t>()) = true;
  }
  return fresh;
}

void add_lock_keys(const Event& event, const handlers::Fact& f, std::set<std::string>& keys) {
  if (event.type == "crm.sync.requested") {
    keys.insert("sync:" + json::value_to<std::string>(f.details.at("entity_type")) + ":" +
                json::value_to<std::string>(f.details.at("entity_id")));
  }
  if (f.prospect_id) keys.insert("prospect:" + *f.prospect_id);
  if (f.entity_id) keys.insert(std::string(handlers::to_string(f.entity_type)) + ":" + *f.entity_id);
  if (f.provider_message_id) keys.insert("message:" + *f.provider_message_id);
}

std::vector<std::pair<std::string, std::string>> related_lock_keys(pqxx::transaction_base& tx,
                                                                  const std::set<std::string>& keys) {
  std::vector<std::pair<std::string, std::string>> related;
  std::vector<std::string> types, ids, message_ids, hubspot_deals;
  for (const std::string& key : keys) {
    const size_t colon = key.find(':');
    if (colon == std::string::npos) continue;
    const std::string_view kind = std::string_view(key).substr(0, colon);
    const std::string id = key.substr(colon + 1);
    if (kind == "email" || kind == "sms" || kind == "call" || kind == "deal" || kind == "followup") {
      types.emplace_back(kind);
      ids.push_back(id);
    } else if (kind == "message") {
      message_ids.push_back(id);
    } else if (kind == "hubspot" && id.starts_with(kHubspotDealPrefix)) {
      hubspot_deals.push_back(id.substr(kHubspotDealPrefix.size()));
    }
  }
  if (ids.empty() && message_ids.empty() && hubspot_deals.empty()) return related;
  for (const auto& row : planned(tx, "crm_related_keys", kRelatedKeys, text_array(types), text_array(ids),
                                 text_array(message_ids), text_array(hubspot_deals))) {
    related.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
  }
  return related;
}

void project(pqxx::transaction_base& tx, const std::vector<FactRow>& rows,
             const ProjectionOptions& options) {
  if (rows.empty()) return;
  Touched touched;
  std::set<std::string> message_ids, keys, event_ids, reinferred, sync_requests;
  // Prospects whose pending follow-ups the cancellation rule must look at
  // again: those that gained an event the rule reads (or gained or lost
  // one by inference below). The rule reads nothing else of a prospect, so
  // an open or a click leaves its follow-ups as they are.
  std::set<std::string> recheck;
  std::set<std::string> rechecked_followups;  // made or moved below, or named
  for (const FactRow& r : rows) {
    const handlers::Fact& f = *r.fact;
    event_ids.insert(r.event->id);
    if (f.prospect_id && can_cancel_followups(r.event->type)) recheck.insert(*f.prospect_id);
    if (r.event->type == "crm.sync.requested") sync_requests.insert(r.event->id);
    if (f.prospect_id) touched.prospects.insert(*f.prospect_id);
    if (f.entity_id) touched.of(f.entity_type)->insert(*f.entity_id);
    if (f.provider_message_id) message_ids.insert(*f.provider_message_id);
    add_lock_keys(*r.event, f, keys);
  }
  KeyLocks locks(tx);
  locks.take(keys);

  // HubSpot changes of deals: the local rows with that HubSpot id (none yet:
  // the change waits on the timeline for reproject_hubspot_changes). The
  // object's lock, taken above, is the one the write-back takes too, so a
  // change and the write-back of its id cannot miss each other.
  std::set<std::string> valued;  // prospects whose deal_value may move
  {
    std::set<std::string> hubspot_ids, more;
    for (const std::string& object : touched.hubspot) {
      if (object.starts_with(kHubspotDealPrefix)) hubspot_ids.insert(object.substr(kHubspotDealPrefix.size()));
    }
    if (!hubspot_ids.empty()) {
      for (const auto& row : planned(tx, "crm_deals_of_hubspot_ids", kDealsOfHubspotIds, text_array(hubspot_ids))) {
        std::string id = row[0].as<std::string>();
        if (touched.deals.insert(id).second) more.insert("deal:" + id);
        if (!row[1].is_null()) {
          valued.insert(row[1].as<std::string>());
          more.insert("prospect:" + row[1].as<std::string>());
        }
      }
    }
    locks.take(more);
  }

  // Link SendGrid orphans, then give prospect-less events their prospect.
  if (!message_ids.empty()) {
    std::set<std::string> more;
    for (const auto& row : planned(tx, "crm_link_orphans", kLinkOrphans, text_array(message_ids))) {
      std::string id = row[0].as<std::string>();
      if (touched.emails.insert(id).second) more.insert("email:" + id);
    }
    locks.take(more);
  }
  {
    std::vector<std::string> types, ids;
    for (EntityType t : {EntityType::kEmail, EntityType::kSms, EntityType::kCall, EntityType::kDeal,
                         EntityType::kFollowup}) {
      for (const std::string& id : *touched.of(t)) {
        types.push_back(handlers::to_string(t));
        ids.push_back(id);
      }
    }
    std::set<std::string> more;
    if (!ids.empty()) {
      for (const auto& row : planned(tx, "crm_infer_prospects", kInferProspects, text_array(types), text_array(ids))) {
        for (int c = 0; c < 2; ++c) {
          if (row[c].is_null()) continue;
          std::string id = row[c].as<std::string>();
          recheck.insert(id);
          if (touched.prospects.insert(id).second) more.insert("prospect:" + id);
        }
        reinferred.insert(row[2].as<std::string>());
      }
    }
    locks.take(more);
  }

  if (!touched.emails.empty()) planned(tx, "crm_project_emails", kProjectEmails, text_array(touched.emails));
  if (!touched.sms.empty()) planned(tx, "crm_project_sms", kProjectSms, text_array(touched.sms));
  if (!touched.calls.empty()) planned(tx, "crm_project_calls", kProjectCalls, text_array(touched.calls));
  if (!touched.deals.empty()) {
    planned(tx, "crm_project_deals", kProjectDeals, text_array(touched.deals), stages_json(options.hubspot_deal_stages));
  }
  if (!valued.empty()) planned(tx, "crm_refresh_deal_values", kRefreshDealValues, text_array(valued));
  if (!touched.customers.empty()) planned(tx, "crm_project_customers", kProjectCustomers, text_array(touched.customers));

  if (!touched.emails.empty() || !touched.calls.empty() || !touched.followups.empty() ||
      !touched.deals.empty() || !touched.prospects.empty()) {
    json::array delays;
    for (Millis d : options.email_sequence) delays.emplace_back(d.count());
    // The rows made or moved here are locked by id before the cancellation
    // rule below reads the timeline. A crm.followup.cancelled that names
    // only the follow-up locks that id too, and cannot see a row this
    // batch has not committed: without the lock, each transaction would
    // miss the other (the row stays scheduled, or the prospect's
    // next_follow_up_at keeps a cancelled timer). With it, whichever waits
    // reads the other's commit in its next statement.
    std::set<std::string> made;  // lock keys
    for (const auto& row :
         planned(tx, "crm_schedule_followups", kScheduleFollowups, text_array(touched.emails), json::serialize(delays),
                        text_array(touched.calls), static_cast<long long>(options.call_reminder_before.count()),
                        text_array(touched.followups), text_array(touched.deals), text_array(touched.prospects),
                        static_cast<long long>(options.stale_deal_after.count()))) {
      std::string id = row[0].as<std::string>();
      made.insert("followup:" + id);
      rechecked_followups.insert(std::move(id));
    }
    locks.take(made);
  }

  if (!sync_requests.empty()) planned(tx, "crm_enqueue_sync", kEnqueueSync, text_array(sync_requests));

  // The rule again for the follow-ups made or moved above (their source
  // time or prospect may have changed), those the batch names, and every
  // pending one of the prospects in `recheck`.
  rechecked_followups.insert(touched.followups.begin(), touched.followups.end());
  if (!recheck.empty() || !rechecked_followups.empty()) {
    // A follow-up named only by its id (a crm.followup.cancelled) changes
    // its prospect's next_follow_up_at: that prospect is recomputed too.
    std::set<std::string> more;
    for (const auto& row :
         planned(tx, "crm_cancel_followups", kCancelFollowups, text_array(recheck), text_array(rechecked_followups))) {
      if (row[0].is_null()) continue;
      std::string id = row[0].as<std::string>();
      if (touched.prospects.insert(id).second) more.insert("prospect:" + id);
    }
    locks.take(more);
  }
  if (!touched.prospects.empty()) {
    const std::string prospects = text_array(touched.prospects);
    planned(tx, "crm_project_prospects", kProjectProspects, prospects, weights_json(options.weights));
    if (options.notify && options.score_threshold > 0) {
      planned(tx, "crm_notify_scores", kNotifyScores, prospects, options.score_threshold);
    }
  }
  if (options.notify) {
    planned(tx, "crm_notify_events", kNotifyEvents, text_array(event_ids));
    if (!reinferred.empty()) planned(tx, "crm_notify_reinferred", kNotifyReinferred, text_array(reinferred));
  }
}

void lock_sync_entities(pqxx::transaction_base& tx,
                        const std::vector<std::pair<std::string, std::string>>& entities) {
  std::set<std::string> keys;
  for (const auto& [type, id] : entities) keys.insert("sync:" + type + ":" + id);
  KeyLocks(tx).take(keys);
}

void reproject_hubspot_changes(pqxx::transaction_base& tx, const std::string& entity_type,
                               const std::vector<std::string>& local_ids,
                               const ProjectionOptions& options) {
  // HubSpot owns no company or contact field (SPEC.md §6): nothing to do.
  if (entity_type == "company" || entity_type == "contact") return;
  if (entity_type != "deal") {
    throw std::invalid_argument("reproject_hubspot_changes: unknown entity type \"" + entity_type + "\"");
  }
  if (local_ids.empty()) return;
  const std::set<std::string> ids(local_ids.begin(), local_ids.end());
  const std::string ids_array = text_array(ids);
  // The same keys a batch takes for these rows, in one round: the caller
  // has just written the HubSpot ids, so they are read here, not passed.
  std::set<std::string> keys, prospects;
  for (const std::string& id : ids) keys.insert("deal:" + id);
  for (const auto& row : planned(tx, "crm_deals_by_ids", kDealsByIds, ids_array)) {
    if (!row[0].is_null()) keys.insert("hubspot:deal:" + row[0].as<std::string>());
    if (!row[1].is_null()) {
      prospects.insert(row[1].as<std::string>());
      keys.insert("prospect:" + row[1].as<std::string>());
    }
  }
  KeyLocks(tx).take(keys);
  planned(tx, "crm_project_deals", kProjectDeals, ids_array, stages_json(options.hubspot_deal_stages));
  if (!prospects.empty()) planned(tx, "crm_refresh_deal_values", kRefreshDealValues, text_array(prospects));
}

}  // namespace crm::db
