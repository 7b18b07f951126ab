#include "handlers/handler.h"

#include <string>

namespace crm::handlers {

Result<std::optional<std::string>> optional_string(const Event& event, std::string_view field) {
  const boost::json::value* v = event.data.if_contains(field);
  if (v == nullptr || v->is_null()) return std::optional<std::string>{};
  if (!v->is_string()) {
    return Status::permanent("wrong_type", "data." + std::string(field) + " must be a string");
  }
  return std::optional<std::string>{std::string(v->get_string())};
}

Result<std::string> required_string(const Event& event, std::string_view field) {
  auto v = optional_string(event, field);
  if (!v) return v.status();
  if (!v->has_value() || (*v)->empty()) {
    return Status::permanent("missing_field", "data." + std::string(field) + " is required");
  }
  return std::move(**v);
}

}  // namespace crm::handlers
