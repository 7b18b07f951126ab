#pragma once
// Seeded outreach histories (TESTPLAN.md "Generator"): every event type of
// SPEC.md §4's outreach table and the SendGrid mapping, over a few prospects,
// with the orders that break naive code built in: bounced before sent,
// opened before delivered, SendGrid events that name their email only by
// the message id and arrive before the send, an older deal stage after a
// newer one, Apple privacy pre-fetch opens, several events in the same
// second (so the event-id tie-break matters), changes made in HubSpot older
// and newer than the web app's write, to fields HubSpot owns and to fields
// it does not, and to objects no row knows.
//
// The HubSpot changes name the web app's rows seed_web_app_rows writes: a
// database the invariant compares must be seeded before the first event.
//
// Used by the invariant tests and by bench/.

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/applier.h"
#include "daemon/core/status.h"
#include "db/database.h"

namespace crm::test {

struct HistoryEvent {
  std::string topic;   // crm.outreach.events or sendgrid.events
  std::string key;     // the Kafka key
  std::string value;   // a CloudEvent, or a one-element SendGrid array
  std::string id;      // event id / sg_event_id
  std::string type;    // the crm.* type it maps to
  std::int64_t time_us = 0;
  std::string prospect_id;  // always known to the generator
  std::string entity_id;    // email / sms / call / deal id ("" for none)
  bool machine_open = false;
};

struct HistoryShape {
  int prospects = 4;
  int max_emails = 3;       // per prospect
  int max_email_events = 7; // follow-on events per email
  int max_sms = 2;
  int max_calls = 2;
  int max_hubspot_changes = 4;  // per prospect
};

// Distinct events, in generation order (not time order).
std::vector<HistoryEvent> outreach_history(unsigned seed, const HistoryShape& shape = {});

class TestDatabase;
// The rows the web app wrote before the history starts, the same for every
// seed: companies co0..co2 with HubSpot ids and, for two prospects in three,
// the deal "p<k>-d0" with HubSpot id "hs-d<k>", written at day 2 + k hours
// of the history, half of them naming the prospect. Every third prospect's
// "hs-d<k>" is named by HubSpot changes and by no row. `shape` must be the
// one the history was generated with.
void seed_web_app_rows(const TestDatabase& db, const HistoryShape& shape = {});

// Sorted by (time, id): the order the invariant compares against.
std::vector<HistoryEvent> in_time_order(std::vector<HistoryEvent> events);

// An RFC 3339 event time on the tests' calendar: `hour` hours (and
// `minute` minutes) after 2026-03-01T00:00:00Z.
std::string at_hour(int hour, int minute = 0);

// A CloudEvent of `type` in structured mode, as a history event.
HistoryEvent cloud_event(const std::string& id, const std::string& type, const std::string& time,
                         const std::string& data_json);

// The item the consume loop would build for `e` at `offset`.
WorkItem work_item(const HistoryEvent& e, long long offset);

// Applies `events` in consecutive batches of `batch`; an event that becomes a
// dead letter is an error (the histories are valid).
Status apply_events(db::Database& db, const std::vector<HistoryEvent>& events, size_t batch,
                    const db::ProjectionOptions& options);

// Every table the outreach events feed, as text, without the columns that
// record when the worker did something rather than what happened
// (created_at, updated_at, processed_at, the timeline's serial id) and the
// Kafka position of each event (a permutation delivers it elsewhere). Two
// snapshots are equal iff the effects are.
std::string outreach_tables(const TestDatabase& db);

}  // namespace crm::test
