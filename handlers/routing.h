#pragma once
// The routing table: one explicit, compile-time list from CloudEvents type
// to handler (routing.cc). A type not in the list is a dead letter with
// reason unknown_type. The list is also the allow-list for the `type` label
// of crm_worker_events_total, so bogus types cannot create series.

#include <string_view>
#include <vector>

#include "handlers/handler.h"

namespace crm::handlers {

// The handler for `type`, or nullptr.
const Handler* find_handler(std::string_view type);

// Every routed type, in table order.
std::vector<std::string_view> routed_types();

}  // namespace crm::handlers
