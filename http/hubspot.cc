#include "http/hubspot.h"

#include <charconv>

#include <boost/json.hpp>

namespace crm::hubspot {
namespace {

namespace json = boost::json;

constexpr std::size_t kMaxSummary = 500;

const json::object* parse_object(std::string_view body, json::value& holder) {
  boost::system::error_code ec;
  holder = json::parse(body, ec);
  if (ec) return nullptr;
  return holder.if_object();
}

std::string string_at(const json::object& o, std::string_view key) {
  if (auto it = o.find(key); it != o.end() && it->value().is_string()) {
    return std::string(it->value().get_string());
  }
  return {};
}

std::optional<long long> header_int(const http::Response& r, const char* name) {
  auto it = r.headers.find(name);
  if (it == r.headers.end()) return std::nullopt;
  std::string_view v = it->second;
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.remove_suffix(1);
  long long out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size() || out < 0 || out > 1'000'000'000) {
    return std::nullopt;
  }
  return out;
}

// The summary becomes sync_queue.last_error through a jsonb parameter,
// which PostgreSQL refuses whole (and with it every outcome of the pass) if
// one string is not valid UTF-8 or holds a NUL. The parsed JSON strings are
// valid UTF-8, so the cut must not split a character, and "\u0000" must go.
std::string clip(std::string s) {
  if (s.size() > kMaxSummary) {
    std::size_t cut = kMaxSummary;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    s += "…";
  }
  // One line: HubSpot's messages may carry newlines, and no NUL (above).
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

}  // namespace

std::string object_type(const std::string& entity_type) {
  if (entity_type == "company") return "companies";
  if (entity_type == "contact") return "contacts";
  return "deals";
}

std::string upsert_body(const std::vector<Input>& inputs, const std::string& id_property) {
  json::array a;
  for (const auto& in : inputs) {
    json::object props;
    for (const auto& [k, v] : in.properties) props[k] = v;
    a.emplace_back(json::object{{"id", in.id}, {"idProperty", id_property}, {"properties", props}});
  }
  return json::serialize(json::object{{"inputs", a}});
}

std::string read_body(const std::vector<std::string>& ids, const std::string& id_property,
                      const std::vector<std::string>& properties) {
  json::array inputs;
  for (const auto& id : ids) inputs.emplace_back(json::object{{"id", id}});
  json::array props;
  for (const auto& p : properties) props.emplace_back(p);
  return json::serialize(
      json::object{{"inputs", inputs}, {"idProperty", id_property}, {"properties", props}});
}

std::string archive_body(const std::vector<std::string>& hubspot_ids) {
  json::array inputs;
  for (const auto& id : hubspot_ids) inputs.emplace_back(json::object{{"id", id}});
  return json::serialize(json::object{{"inputs", inputs}});
}

std::string associate_body(const std::vector<std::pair<std::string, std::string>>& pairs) {
  json::array inputs;
  for (const auto& [from, to] : pairs) {
    inputs.emplace_back(json::object{{"from", json::object{{"id", from}}},
                                     {"to", json::object{{"id", to}}}});
  }
  return json::serialize(json::object{{"inputs", inputs}});
}

std::optional<std::vector<Object>> parse_results(std::string_view body) {
  json::value holder;
  const json::object* root = parse_object(body, holder);
  if (root == nullptr) return std::nullopt;
  auto it = root->find("results");
  if (it == root->end() || !it->value().is_array()) return std::nullopt;
  std::vector<Object> out;
  for (const json::value& v : it->value().get_array()) {
    const json::object* o = v.if_object();
    if (o == nullptr) continue;
    Object obj;
    obj.id = string_at(*o, "id");
    // The id is written to PostgreSQL, which cannot hold a NUL ("\u0000");
    // no real HubSpot id has one, so such a result is as good as no id.
    if (obj.id.empty() || obj.id.find('\0') != std::string::npos) continue;
    if (auto p = o->find("properties"); p != o->end() && p->value().is_object()) {
      for (const auto& [k, pv] : p->value().get_object()) {
        if (pv.is_string()) obj.properties[std::string(k)] = std::string(pv.get_string());
      }
    }
    out.push_back(std::move(obj));
  }
  return out;
}

std::string error_summary(const http::Response& response) {
  std::string head = "HubSpot answered " + std::to_string(response.status);
  json::value holder;
  const json::object* root = parse_object(response.body, holder);
  if (root == nullptr) return head;
  std::string category = string_at(*root, "category");
  if (category.empty()) category = string_at(*root, "errorType");
  const std::string message = string_at(*root, "message");
  const std::string correlation = string_at(*root, "correlationId");
  std::string out = head;
  if (!category.empty()) out += " " + category;
  if (!message.empty()) out += ": " + message;
  if (!correlation.empty()) out += " (correlationId " + correlation + ")";
  return clip(std::move(out));
}

RateHeaders rate_headers(const http::Response& response) {
  RateHeaders h;
  if (auto v = header_int(response, "x-hubspot-ratelimit-max"); v && *v > 0) {
    h.max = static_cast<int>(*v);
  }
  if (auto v = header_int(response, "x-hubspot-ratelimit-remaining")) {
    h.remaining = static_cast<int>(*v);
  }
  if (auto v = header_int(response, "x-hubspot-ratelimit-interval-milliseconds");
      v && *v >= 100 && *v <= 86'400'000) {
    h.interval = Millis{*v};
  }
  return h;
}

bool daily_limit_hit(const http::Response& response) {
  if (response.status != 429) return false;
  json::value holder;
  const json::object* root = parse_object(response.body, holder);
  return root != nullptr && string_at(*root, "policyName") == "DAILY";
}

}  // namespace crm::hubspot
