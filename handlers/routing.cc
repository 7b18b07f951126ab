#include "handlers/routing.h"

#include "handlers/prospects.h"

namespace crm::handlers {
namespace {

const ProspectDiscoveredHandler kProspectDiscovered;

struct Route {
  std::string_view type;
  const Handler* handler;
};

// The one list. Adding an event type means adding its line here.
constexpr Route kRoutes[] = {
    {"crm.prospect.discovered", &kProspectDiscovered},
};

}  // namespace

const Handler* find_handler(std::string_view type) {
  for (const Route& r : kRoutes) {
    if (r.type == type) return r.handler;
  }
  return nullptr;
}

std::vector<std::string_view> routed_types() {
  std::vector<std::string_view> out;
  for (const Route& r : kRoutes) out.push_back(r.type);
  return out;
}

}  // namespace crm::handlers
