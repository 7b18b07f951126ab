#include "handlers/prospects.h"

namespace crm::handlers {

Status ProspectDiscoveredHandler::handle(const Event& event, Stores& stores) const {
  ProspectProfile p;
  auto id = required_string(event, "prospect_id");
  if (!id) return id.status();
  p.id = std::move(*id);
  auto name = required_string(event, "name");
  if (!name) return name.status();
  p.name = std::move(*name);

  struct Optional {
    const char* field;
    std::optional<std::string> ProspectProfile::*member;
  };
  static constexpr Optional kOptional[] = {
      {"email", &ProspectProfile::email},       {"phone", &ProspectProfile::phone},
      {"company", &ProspectProfile::company},   {"source", &ProspectProfile::source},
      {"category", &ProspectProfile::category}, {"urgency", &ProspectProfile::urgency},
  };
  for (const Optional& o : kOptional) {
    auto v = optional_string(event, o.field);
    if (!v) return v.status();
    p.*(o.member) = std::move(*v);
  }

  if (Status s = stores.prospects.apply_discovered(p, event.time, event.id); !s) return s;
  return stores.prospects.record_stage(p.id, "discovered", event.time, "");
}

}  // namespace crm::handlers
