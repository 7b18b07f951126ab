#pragma once
// hubspot.object.changed (topic crm.sync.jobs): a property of a company,
// contact or deal was changed by someone in HubSpot (SPEC.md §4, §6). The
// field list in routing.cc checks the shape; this file checks what depends
// on the property, because the deal properties crm-worker applies must be
// readable before the event is accepted: a value that can never be applied
// is a dead letter now, not a failed projection later.
//
// Which properties take effect, and when, is the deals projection's
// business (db/projections.h); here they are only checked and normalized.

#include <optional>
#include <string>
#include <string_view>

#include "handlers/handler.h"

namespace crm::handlers {

// The Handler::check of hubspot.object.changed. Names the fact's entity
// "<object_type>:<object_id>" (kHubspot) and drops any prospect (the event
// has none; a prospect_id in data stays data). For deals: a non-empty
// `amount` must be a decimal number (bad_value); a non-empty `closedate`
// must be a date and is normalized to its UTC date "YYYY-MM-DD" (bad_value).
// An empty or absent value means HubSpot cleared the property.
Status check_hubspot_change(const Event& event, Fact& fact);

// HubSpot's date forms (an ISO date "2026-06-30", an RFC 3339 time, or epoch
// milliseconds "1782777600000") as the UTC date "YYYY-MM-DD"; nullopt for
// anything else.
std::optional<std::string> hubspot_date(std::string_view value);

}  // namespace crm::handlers
