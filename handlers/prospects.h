#pragma once
// crm.prospect.discovered: create or enrich the prospect and record its
// first pipeline stage, "discovered".

#include "handlers/handler.h"

namespace crm::handlers {

class ProspectDiscoveredHandler final : public Handler {
 public:
  std::string_view name() const override { return "prospect_discovered"; }
  Status handle(const Event& event, Stores& stores) const override;
};

}  // namespace crm::handlers
