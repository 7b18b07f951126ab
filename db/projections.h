#pragma once
// The outreach projections: how the set of facts on the timeline becomes
// the CRM's tables (SPEC.md §4 effects, §5 invariant).
//
// A batch of facts is recorded (processed_events + outreach_activities, one
// statement), then every row the new facts touch is recomputed from ALL the
// facts of its entity or prospect, with set-based SQL: one statement per
// table for the whole batch. A set has no order, so the tables cannot depend
// on the order, duplicates, batch cuts or crashes the events came through;
// the rules below are written so that they equal "each distinct event once,
// in time order (ties by event id)":
//
//   * statuses: the highest rank reached; a terminal state (email bounced /
//     failed, SMS undelivered / failed, sales closed_won / closed_lost) is the
//     one of the EARLIEST terminal event and nothing moves it afterwards;
//   * "first" times are minima, "last" times maxima, counters count distinct
//     events (or distinct emails / calls, as SPEC.md says);
//   * values an event states (a deal's stage, a call's completion notes, a
//     profile field) come from the newest event that states them;
//   * deals, against HubSpot (SPEC.md §6; migration 0006): the sales fields
//     people set in HubSpot (dealstage -> stage through the reverse of
//     hubspot.deal_stages, amount, closedate -> close_date) take the value
//     of the newest change of that field from any source: a
//     hubspot.object.changed whose occurred_at is newer than the row's
//     updated_at (the web app's last write, which crm-worker never moves), or
//     a crm.deal.stage_changed (stage, amount) by its time. None: the
//     column keeps its value (the web app's) and <field>_changed_at is NULL.
//     A HubSpot change finds its row by hubspot_deal_id; one that names an id
//     no row has yet takes effect when the id is written back
//     (reproject_hubspot_changes). Every other HubSpot property, and every
//     company or contact property, is owned locally: timeline only. Applying
//     a HubSpot change never queues a sync job (no ping-pong: only
//     crm.sync.requested does), and moves no prospect (only the prospect's
//     deal_value follows the deal's amount);
//   * pipeline_stages holds each stage the prospect moved FORWARD to, in time
//     order, with the time it happened (a row can disappear when an earlier
//     event arrives that makes it a non-move);
//   * follow-ups: an email sent (not itself a sequence step) schedules step
//     1 of followups.email_sequence; an email the executor sent for step n
//     schedules step n + 1; a call scheduled a reminder; a deal with a
//     prospect a stale-deal alert after its last activity; a
//     crm.followup.scheduled an explicit timer. Whether a row still
//     `scheduled` is cancelled is one rule, crm_followup_cancellation
//     (migration 0003), re-evaluated for every pending row of the touched
//     prospects: the earliest qualifying event, or none (a row whose
//     cancelling event no longer qualifies is scheduled again). Rows an
//     executor already took (sending, sent, failed, dead) are never touched;
//   * next_follow_up_at: the earliest scheduled follow-up (reminders aside)
//     or scheduled call; the follow-up executor recomputes it when it fires
//     one;
//   * customers: the status follows the newest of payments and
//     cancellations, so paying again after churning makes a customer active;
//   * lead_score = Σ weight × distinct count, with non-negative weights, so
//     it only grows and "crossed the threshold" is a property of the set:
//     one notification per prospect;
//   * notifications (reply, call completed, payment) are queued for the
//     batch's new events only, with the event id in their id, so a
//     redelivery adds nothing and turning Slack on does not replay history;
//   * pipeline_stages and the outreach columns of these tables are derived
//     data: other writers' changes to them are overwritten by the next
//     recomputation.
//
// Concurrency: two instances, or two lanes of one (consumer loop), may touch
// the same rows (SendGrid events are not keyed by prospect). Before reading,
// the batch takes transaction-scoped advisory locks on every key it
// recomputes (and on SendGrid message ids, so that an event and the email it
// names cannot miss each other), so a recomputation always sees the other
// transaction's committed facts. One lock per key, under a shared "whole"
// lock that a batch with too many keys takes exclusively instead. Keys
// linked or inferred during the batch are locked in later rounds; a
// deadlock that this can cause is detected by PostgreSQL and retried.
//
// Known limits: a SendGrid event without custom args is linked to the email
// whose crm.email.sent carries its X-Message-Id; one send with several
// personalizations shares one X-Message-Id, so such sends need the email_id
// custom arg. An asynchronous bounce without custom args names no email and
// is a dead letter.

#include <map>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "daemon/config.h"
#include "daemon/core/time.h"
#include "handlers/event.h"
#include "handlers/handler.h"

namespace crm::db {

struct ProjectionOptions {
  std::vector<Millis> email_sequence;        // followups.email_sequence
  Millis call_reminder_before{15 * 60 * 1000};
  Millis stale_deal_after{0};                // 0: no stale-deal alerts
  LeadScoreWeights weights;
  int score_threshold = 0;                   // 0: no score notification
  bool notify = false;                       // queue Slack notifications
  // HubSpot's deal stage id -> ours: the reverse of hubspot.deal_stages.
  // A HubSpot stage not listed is stored as HubSpot names it.
  std::map<std::string, std::string> hubspot_deal_stages;
};

// One event ready to be applied.
struct FactRow {
  const Event* event = nullptr;
  const handlers::Fact* fact = nullptr;
};

// Records the facts: processed_events and timeline rows. Returns, per row,
// whether it was new (false: an earlier delivery already recorded it). The
// rows must have distinct event ids.
std::vector<bool> record_facts(pqxx::transaction_base& tx, const std::vector<FactRow>& rows);

// Plans the rest of the transaction for what a batch does: look up the
// rows of the keys it touches by index. Without this the planner picks
// sequential scans of the timeline on tables whose statistics autovacuum
// has not gathered yet (a fresh or fast-growing database guesses 200
// distinct prospects, whatever their number), and a batch then costs time
// in proportion to the whole history instead of to its own keys.
void prefer_index_lookups(pqxx::transaction_base& tx);

// Analyses the tables a batch reads that have doubled (or been rewritten)
// since their last analysis, and at least `min_changes` rows changed
// (migration 0008 says why autovacuum is not enough on a growing database).
// Returns the tables analysed; none when another instance is at it.
std::vector<std::string> analyze_grown_tables(pqxx::transaction_base& tx, long long min_changes = 1000);

// The options of a daemon configuration.
ProjectionOptions projection_options(const Config& config);

// The keys a batch locks for one fact before it reads anything ("<kind>:
// <id>": its prospect, entity, SendGrid message id, sync entity). Batches
// whose facts share none of these wait on each other only for keys learnt
// later (a prospect inferred, an email linked by its message id).
void add_lock_keys(const Event& event, const handlers::Fact& fact, std::set<std::string>& keys);

// What the later lock rounds of a batch with these first-round keys would
// most likely lock, read now without locks: pairs (key, key it leads to),
// e.g. ("message:<id>", "email:<id>"), ("email:<id>", "prospect:<id>").
// Batches apart in keys and related keys do not wait on each other.
std::vector<std::pair<std::string, std::string>> related_lock_keys(pqxx::transaction_base& tx,
                                                                  const std::set<std::string>& keys);

// Recomputes every row the given (new) facts touch. Throws what libpqxx
// throws; the caller classifies.
void project(pqxx::transaction_base& tx, const std::vector<FactRow>& new_rows,
             const ProjectionOptions& options);

// Takes the advisory locks a batch takes for these sync entities ((type,
// id) as in sync_queue), until the transaction ends: whoever changes the
// entity's pending job (the enqueue of a crm.sync.requested, the sync
// executor folding a newer request into a job that goes back to pending)
// holds it, so the two never race into the one-pending-job index.
void lock_sync_entities(pqxx::transaction_base& tx,
                        const std::vector<std::pair<std::string, std::string>>& entities);

// Recomputes the HubSpot-owned fields of these local rows (entity_type
// company, contact or deal; ids as in sync_queue.entity_id) from the HubSpot
// changes on the timeline, and the deal_value of their prospects. The sync
// executor calls it in the transaction that writes HubSpot ids back, after
// writing them: a change that arrived before its object's id was known takes
// effect then. The result is the one project() gives for the same set of
// events. Companies and contacts own every field locally, so for them it
// does nothing; rows that do not exist are skipped. Takes the advisory
// locks of project() on the rows, their HubSpot objects and prospects, so a
// concurrent batch and this call see each other's committed work; a
// deadlock with such a batch is possible (as between two batches) and is
// transient: retry the transaction. Throws std::invalid_argument for
// another entity_type, and what libpqxx throws.
void reproject_hubspot_changes(pqxx::transaction_base& tx, const std::string& entity_type,
                               const std::vector<std::string>& local_ids,
                               const ProjectionOptions& options);

}  // namespace crm::db
