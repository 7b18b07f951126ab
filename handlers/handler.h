#pragma once
// The handler contract. A handler applies one event's effects through the
// small domain stores below; it never sees librdkafka or libpqxx and never
// builds SQL, so it can be unit-tested with in-memory fakes.
//
// Called on the consumer thread, inside the batch's database transaction and
// the event's own savepoint. By the time handle() runs, the event has been
// recorded in processed_events (so it is not a duplicate) and appended to
// the outreach_activities timeline.
//
// Return kPermanent for input that violates the contract (it becomes a dead
// letter and the savepoint is rolled back); store errors pass through with
// their own kind (a lost database connection is kTransient and fails the
// whole batch, which is retried).

#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/status.h"
#include "handlers/event.h"

namespace crm::handlers {

// A prospect's profile as one crm.prospect.discovered event states it.
// Absent fields are nullopt: they never erase what another event said.
struct ProspectProfile {
  std::string id;
  std::optional<std::string> name, email, phone, company, source, category, urgency;
};

class ProspectStore {
 public:
  virtual ~ProspectStore() = default;
  // Creates the prospect if it does not exist (sales_status 'new'), then
  // sets each profile field to the value given by the latest discovered
  // event (by event time, then event id) that carries that field, so the
  // result does not depend on the order events arrive in.
  [[nodiscard]] virtual Status apply_discovered(const ProspectProfile& profile, Timestamp at,
                                                const std::string& event_id) = 0;
  // Records that the prospect reached `stage`; keeps the earliest date.
  [[nodiscard]] virtual Status record_stage(const std::string& prospect_id,
                                            const std::string& stage, Timestamp at,
                                            const std::string& notes) = 0;
};

// What a handler may touch, bound to the current transaction.
struct Stores {
  ProspectStore& prospects;
};

class Handler {
 public:
  virtual ~Handler() = default;
  // A stable name, used as a metric label.
  virtual std::string_view name() const = 0;
  [[nodiscard]] virtual Status handle(const Event& event, Stores& stores) const = 0;
};

// Field helpers shared by handlers: a required / optional string member of
// event.data, with kPermanent "missing_field" / "wrong_type" on violation.
Result<std::string> required_string(const Event& event, std::string_view field);
Result<std::optional<std::string>> optional_string(const Event& event, std::string_view field);

}  // namespace crm::handlers
