#pragma once
// The handler contract. A handler checks one event against the contract of
// its type (SPEC.md §4) and turns it into a Fact: the timeline row the event
// becomes. It never sees librdkafka or libpqxx and never builds SQL; it is a
// pure function, unit-tested on its own.
//
// What a fact *does* (statuses, counters, follow-ups, notifications) is not
// decided here but by the projections (db/projections.h), which recompute
// every touched row from the set of facts on the timeline. That split is what
// makes the result independent of arrival order: a handler sees one event,
// the projection sees all of them.
//
// Input that violates the contract is kPermanent with reason missing_field,
// wrong_type or bad_value, naming the field: the event becomes a dead letter.

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "daemon/core/status.h"
#include "handlers/event.h"

namespace crm::handlers {

// What an event is about. Projections find "every event of email X" by it.
// kHubspot is an object in HubSpot, named "<object_type>:<HubSpot's id>"
// ("deal:9071"): a HubSpot change names no local row, the projection finds
// the row by its hubspot_*_id when it has one.
enum class EntityType { kNone, kEmail, kSms, kCall, kDeal, kCustomer, kFollowup, kHubspot };
const char* to_string(EntityType type);  // nullptr, "email", "sms", ..., "hubspot"

struct Fact {
  EntityType entity_type = EntityType::kNone;
  // The email / sms / call / deal / follow-up id, the prospect id for
  // kCustomer, "<object_type>:<object_id>" for kHubspot.
  // Unset only for a SendGrid event known by its message id alone.
  std::optional<std::string> entity_id;
  // Unset when the event does not name its prospect (some email events):
  // the projection takes it from the entity's other events.
  std::optional<std::string> prospect_id;
  // SendGrid's X-Message-Id (the part of sg_message_id before the first
  // '.'); links SendGrid events to the email that was sent.
  std::optional<std::string> provider_message_id;
  // The event's data with every contract field checked: the projections may
  // rely on the types (times are normalized RFC 3339, amounts are numbers or
  // decimal strings). Fields outside the contract are kept as they came.
  boost::json::object details;
};

// One field of an event type's contract.
enum class FieldKind {
  kString,        // a JSON string (required: non-empty)
  kText,          // a JSON string, may be empty (reply bodies)
  kTime,          // an RFC 3339 string
  kCount,         // an integer in [0, 10^9]
  kAmount,        // a finite number or a decimal string, |x| < 10^15
  kBool,          // true / false
  kStringArray,   // an array of strings
};

struct FieldSpec {
  std::string_view name;
  FieldKind kind = FieldKind::kString;
  bool required = false;
  // For kString: the allowed values; empty = any.
  std::vector<std::string_view> one_of = {};
};

// Checks one present, non-null field against its spec and writes its
// normalized value into `out` (under spec.name). For rules across fields.
Status check_field(const FieldSpec& spec, const boost::json::value& value, boost::json::object& out);

struct Handler {
  std::string_view type;
  EntityType entity = EntityType::kNone;
  // The data field holding the entity id ("email_id", ...); for kCustomer
  // it is "prospect_id".
  std::string_view entity_field;
  // Whether data.prospect_id is required (else optional).
  bool prospect_required = true;
  std::vector<FieldSpec> fields;
  // Rules the field list cannot state (one field's contract depending on
  // another's value), run on the fact once every field has passed; may
  // refine the fact. nullptr: none.
  Status (*check)(const Event& event, Fact& fact) = nullptr;

  Result<Fact> extract(const Event& event) const;
};

}  // namespace crm::handlers
