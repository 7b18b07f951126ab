#include <cmath>
#include <string>

#include "handlers/handler.h"

namespace crm::handlers {
namespace {

namespace json = boost::json;

Status missing(std::string_view field) {
  return Status::permanent("missing_field", "data." + std::string(field) + " is required");
}

Status wrong_type(std::string_view field, std::string_view expected) {
  return Status::permanent("wrong_type",
                           "data." + std::string(field) + " must be " + std::string(expected));
}

Status bad_value(std::string_view field, std::string_view why) {
  return Status::permanent("bad_value", "data." + std::string(field) + " " + std::string(why));
}

// A decimal string as PostgreSQL numeric reads it: [-]digits[.digits].
bool is_decimal(std::string_view s) {
  size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  size_t digits = 0, dots = 0;
  for (; i < s.size(); ++i) {
    if (s[i] >= '0' && s[i] <= '9') {
      digits++;
    } else if (s[i] == '.' && dots == 0 && digits > 0) {
      dots++;
    } else {
      return false;
    }
  }
  return digits > 0 && s.back() != '.' && s.size() <= 40;
}

constexpr double kMaxAmount = 1e15;

}  // namespace

Status check_field(const FieldSpec& spec, const json::value& v, json::object& out) {
  switch (spec.kind) {
    case FieldKind::kString:
    case FieldKind::kText: {
      if (!v.is_string()) return wrong_type(spec.name, "a string");
      if (spec.kind == FieldKind::kString && spec.required && v.get_string().empty()) {
        return missing(spec.name);
      }
      if (!spec.one_of.empty()) {
        bool found = false;
        for (std::string_view allowed : spec.one_of) found = found || allowed == v.get_string();
        if (!found) {
          std::string list;
          for (std::string_view allowed : spec.one_of) list += (list.empty() ? "" : ", ") + std::string(allowed);
          return bad_value(spec.name, "must be one of: " + list);
        }
      }
      out[spec.name] = v;
      return Status::ok();
    }
    case FieldKind::kTime: {
      if (!v.is_string()) return wrong_type(spec.name, "an RFC 3339 time string");
      std::optional<Timestamp> t = parse_rfc3339(v.get_string());
      if (!t) return Status::permanent("bad_time", "data." + std::string(spec.name) + " is not an RFC 3339 time");
      out[spec.name] = format_rfc3339(*t);
      return Status::ok();
    }
    case FieldKind::kCount: {
      if (!v.is_int64() && !v.is_uint64()) return wrong_type(spec.name, "an integer");
      if (v.is_uint64() || v.get_int64() < 0 || v.get_int64() > 1'000'000'000) {
        return bad_value(spec.name, "must be between 0 and 1000000000");
      }
      out[spec.name] = v.get_int64();
      return Status::ok();
    }
    case FieldKind::kAmount: {
      if (v.is_string()) {
        if (!is_decimal(v.get_string())) return bad_value(spec.name, "is not a decimal number");
        // Bounded like numbers below: at most 15 integer digits.
        std::string_view s = v.get_string();
        size_t int_digits = s.find('.') == std::string_view::npos ? s.size() : s.find('.');
        if (int_digits - (s[0] == '-' ? 1 : 0) > 15) return bad_value(spec.name, "is too large");
      } else if (v.is_number()) {
        double d = v.to_number<double>();
        if (!std::isfinite(d) || std::fabs(d) >= kMaxAmount) return bad_value(spec.name, "is too large");
      } else {
        return wrong_type(spec.name, "a number or a decimal string");
      }
      out[spec.name] = v;
      return Status::ok();
    }
    case FieldKind::kBool:
      if (!v.is_bool()) return wrong_type(spec.name, "true or false");
      out[spec.name] = v;
      return Status::ok();
    case FieldKind::kStringArray:
      if (!v.is_array()) return wrong_type(spec.name, "an array of strings");
      for (const json::value& e : v.get_array()) {
        if (!e.is_string()) return wrong_type(spec.name, "an array of strings");
      }
      out[spec.name] = v;
      return Status::ok();
  }
  return Status::ok();
}

namespace {

// A string member of event.data; an explicit null counts as absent.
Result<std::optional<std::string>> optional_string(const Event& event, std::string_view field) {
  const json::value* v = event.data.if_contains(field);
  if (v == nullptr || v->is_null()) return std::optional<std::string>{};
  if (!v->is_string()) return wrong_type(field, "a string");
  return std::optional<std::string>{std::string(v->get_string())};
}

}  // namespace

const char* to_string(EntityType type) {
  switch (type) {
    case EntityType::kNone: return nullptr;
    case EntityType::kEmail: return "email";
    case EntityType::kSms: return "sms";
    case EntityType::kCall: return "call";
    case EntityType::kDeal: return "deal";
    case EntityType::kCustomer: return "customer";
    case EntityType::kFollowup: return "followup";
    case EntityType::kHubspot: return "hubspot";
  }
  return nullptr;
}

Result<Fact> Handler::extract(const Event& event) const {
  Fact fact;
  fact.entity_type = entity;
  fact.details = event.data;  // fields outside the contract kept as they came

  auto prospect = optional_string(event, "prospect_id");
  if (!prospect) return prospect.status();
  if (prospect->has_value() && (*prospect)->empty()) return missing("prospect_id");
  if (prospect_required && !prospect->has_value()) return missing("prospect_id");
  fact.prospect_id = std::move(*prospect);

  // Only email events carry SendGrid's message id.
  auto provider = entity == EntityType::kEmail ? optional_string(event, "provider_message_id")
                                               : Result<std::optional<std::string>>{std::nullopt};
  if (!provider) return provider.status();
  if (provider->has_value()) {
    // sg_message_id is "<X-Message-Id>.<SendGrid's suffix>"; the X-Message-Id
    // itself has no dot.
    std::string prefix = (*provider)->substr(0, (*provider)->find('.'));
    if (!prefix.empty()) fact.provider_message_id = std::move(prefix);
  }

  if (entity != EntityType::kNone) {
    auto id = optional_string(event, entity_field);
    if (!id) return id.status();
    if (id->has_value() && !(*id)->empty()) {
      fact.entity_id = std::move(*id);
    } else if (!(entity == EntityType::kEmail && fact.provider_message_id &&
                 type != "crm.email.sent")) {
      // Only a SendGrid event may name its email by the message id alone;
      // the send itself must say which email it is.
      return missing(entity_field);
    }
  }

  for (const FieldSpec& spec : fields) {
    const json::value* v = event.data.if_contains(spec.name);
    if (v == nullptr || v->is_null()) {
      if (spec.required) return missing(spec.name);
      fact.details.erase(spec.name);
      continue;
    }
    if (Status s = check_field(spec, *v, fact.details); !s) return s;
  }
  if (check != nullptr) {
    if (Status s = check(event, fact); !s) return s;
  }
  return fact;
}

}  // namespace crm::handlers
