#include "tests/harness/fake_hubspot.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <boost/json.hpp>

#include "daemon/core/time.h"

namespace crm::test {
namespace json = boost::json;
namespace {

// HubSpot's documented batch limits (REFERENCE.md 3.1 and 3.3).
constexpr std::size_t kMaxObjectInputs = 100;
constexpr std::size_t kMaxAssociationInputs = 2000;

bool known_type(const std::string& type) {
  return type == "companies" || type == "contacts" || type == "deals";
}

// The HubSpot-defined unlabeled association type ids (REFERENCE.md 3.3);
// 0 for a pair without a default association.
int default_association_type(const std::string& from, const std::string& to) {
  static const std::map<std::pair<std::string, std::string>, int> kTypes = {
      {{"deals", "companies"}, 341},    {{"companies", "deals"}, 342},
      {{"contacts", "companies"}, 279}, {{"companies", "contacts"}, 280},
      {{"deals", "contacts"}, 3},       {{"contacts", "deals"}, 4},
  };
  auto it = kTypes.find({from, to});
  return it == kTypes.end() ? 0 : it->second;
}

// HubSpot answers timestamps with millisecond precision ("2024-05-01T12:00:00.123Z").
std::string iso_now() {
  std::string micros = format_rfc3339(now_timestamp());  // "....ffffffZ"
  return micros.substr(0, micros.size() - 4) + "Z";
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const auto slash = path.find('/');
    parts.emplace_back(path.substr(0, slash));
    path.remove_prefix(slash == std::string_view::npos ? path.size() : slash);
  }
  return parts;
}

bool has_bearer_token(const Received& r) {
  auto it = r.headers.find("authorization");
  if (it == r.headers.end()) return false;
  const std::string& value = it->second;
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size()) return false;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(value[i])) != kScheme[i]) return false;
  }
  return value.find_first_not_of(' ', kScheme.size()) != std::string::npos;
}

Answer json_answer(int status, const json::value& body) {
  Answer a;
  a.status = status;
  a.headers = {{"Content-Type", "application/json;charset=utf-8"}};
  a.body = json::serialize(body);
  return a;
}

// A completed batch's answer body, as HubSpot's batch endpoints give it.
json::object batch_answer(json::array results, const std::string& started) {
  json::object out;
  out["status"] = "COMPLETE";
  out["results"] = std::move(results);
  out["startedAt"] = started;
  out["completedAt"] = iso_now();
  return out;
}

// A request body that failed validation: what to answer, as a value.
struct Invalid {
  std::string message;
};

// Parses `body` and returns its "inputs" array, checked against `limit`.
// The document is kept in `doc`, which the returned pointer points into.
const json::array* inputs_of(const std::string& body, std::size_t limit, json::value& doc,
                             std::optional<Invalid>& invalid) {
  json::error_code ec;
  doc = json::parse(body, ec);
  if (ec) {
    invalid = Invalid{"Invalid input JSON: " + ec.message()};
    return nullptr;
  }
  const json::object* top = doc.if_object();
  const json::value* inputs = top ? top->if_contains("inputs") : nullptr;
  if (inputs == nullptr || !inputs->is_array()) {
    invalid = Invalid{"Invalid input JSON: \"inputs\" must be an array"};
    return nullptr;
  }
  if (inputs->get_array().size() > limit) {
    invalid = Invalid{"Too many inputs: " + std::to_string(inputs->get_array().size()) +
                      " in one batch, the limit is " + std::to_string(limit)};
    return nullptr;
  }
  return &inputs->get_array();
}

// inputs[i].<field> as a non-empty string, or nullptr.
const json::string* string_field(const json::value& input, std::string_view field) {
  const json::object* o = input.if_object();
  const json::value* v = o ? o->if_contains(field) : nullptr;
  const json::string* s = v ? v->if_string() : nullptr;
  return s && !s->empty() ? s : nullptr;
}

std::string where(std::size_t i) { return "inputs[" + std::to_string(i) + "]"; }

json::object object_json(const HubspotObject& o, json::object properties) {
  json::object out;
  out["id"] = o.id;
  out["properties"] = std::move(properties);
  out["createdAt"] = o.created_at;
  out["updatedAt"] = o.updated_at;
  out["archived"] = o.archived;
  return out;
}

json::object all_properties(const HubspotObject& o) {
  json::object props;
  for (const auto& [k, v] : o.properties) props[k] = v;
  return props;
}

}  // namespace

FakeHubspot::FakeHubspot(std::string id_property) : id_property_(std::move(id_property)) {
  http_.set_handler("/", [this](const Received& r) { return handle(r); });
}

std::string FakeHubspot::upsert_path(const std::string& type) {
  return "/crm/v3/objects/" + type + "/batch/upsert";
}
std::string FakeHubspot::read_path(const std::string& type) {
  return "/crm/v3/objects/" + type + "/batch/read";
}
std::string FakeHubspot::archive_path(const std::string& type) {
  return "/crm/v3/objects/" + type + "/batch/archive";
}
std::string FakeHubspot::associate_path(const std::string& from_type, const std::string& to_type) {
  return "/crm/v4/associations/" + from_type + "/" + to_type + "/batch/associate/default";
}

// --- configuration and counters -----------------------------------------------

void FakeHubspot::set_rate_limit(int max, std::chrono::milliseconds interval) {
  if (max < 1 || interval.count() < 1) throw std::invalid_argument("FakeHubspot: bad rate limit");
  std::lock_guard lock(mutex_);
  rate_max_ = max;
  rate_interval_ = interval;
}

int FakeHubspot::rate_limit_violations() const {
  std::lock_guard lock(mutex_);
  return violations_;
}

int FakeHubspot::max_requests_in_any_interval() const {
  std::chrono::milliseconds interval;
  {
    std::lock_guard lock(mutex_);
    interval = rate_interval_;
  }
  std::vector<std::chrono::system_clock::time_point> at;
  for (const Received& r : http_.requests()) at.push_back(r.at);
  std::sort(at.begin(), at.end());
  // Two pointers over the sorted arrivals: the most that fit in [t, t + interval).
  int best = 0;
  std::size_t first = 0;
  for (std::size_t last = 0; last < at.size(); ++last) {
    while (at[last] - at[first] >= interval) ++first;
    best = std::max(best, static_cast<int>(last - first + 1));
  }
  return best;
}

void FakeHubspot::reject_value(const std::string& property, const std::string& value) {
  std::lock_guard lock(mutex_);
  rejected_values_.emplace(property, value);
}

// --- state --------------------------------------------------------------------

std::optional<HubspotObject> FakeHubspot::find(const std::string& type,
                                               const std::string& id_value) const {
  std::lock_guard lock(mutex_);
  const HubspotObject* o = live_locked(type, id_value);
  if (o == nullptr) return std::nullopt;
  return *o;
}

std::optional<HubspotObject> FakeHubspot::find_by_id(const std::string& type,
                                                     const std::string& hubspot_id) const {
  std::lock_guard lock(mutex_);
  const HubspotObject* o = by_id_locked(type, hubspot_id);
  if (o == nullptr) return std::nullopt;
  return *o;
}

std::vector<HubspotObject> FakeHubspot::objects(const std::string& type) const {
  std::lock_guard lock(mutex_);
  auto it = objects_.find(type);
  return it == objects_.end() ? std::vector<HubspotObject>{} : it->second;
}

std::set<std::pair<std::string, std::string>> FakeHubspot::associations(
    const std::string& from_type, const std::string& to_type) const {
  std::lock_guard lock(mutex_);
  std::set<std::pair<std::string, std::string>> out;
  for (const Association& a : associations_) {
    if (a.from_type == from_type && a.to_type == to_type) out.emplace(a.from_id, a.to_id);
    if (a.from_type == to_type && a.to_type == from_type) out.emplace(a.to_id, a.from_id);
  }
  return out;
}

int FakeHubspot::upserts_of(const std::string& type, const std::string& id_value) const {
  std::lock_guard lock(mutex_);
  auto it = upserts_.find({type, id_value});
  return it == upserts_.end() ? 0 : it->second;
}

int FakeHubspot::requests_of(const std::string& kind, const std::string& type) const {
  std::lock_guard lock(mutex_);
  int n = 0;
  for (const auto& [key, count] : requests_) {
    if (key.first == kind && (type.empty() || key.second == type)) n += count;
  }
  return n;
}

std::string FakeHubspot::seed(const std::string& type,
                              std::map<std::string, std::string> properties) {
  if (!known_type(type)) throw std::invalid_argument("FakeHubspot::seed: unknown type " + type);
  std::lock_guard lock(mutex_);
  auto unique = properties.find(id_property_);
  if (unique != properties.end() && live_locked(type, unique->second) != nullptr) {
    throw std::invalid_argument("FakeHubspot::seed: " + id_property_ + "=" + unique->second +
                                " already exists");
  }
  return create_locked(type, std::move(properties));
}

std::string FakeHubspot::create_locked(const std::string& type,
                                       std::map<std::string, std::string> properties) {
  HubspotObject o;
  o.id = std::to_string(next_id_++);
  o.properties = std::move(properties);
  o.created_at = o.updated_at = iso_now();
  std::vector<HubspotObject>& all = objects_[type];
  all.push_back(std::move(o));
  const HubspotObject& created = all.back();
  id_index_[{type, created.id}] = all.size() - 1;
  if (auto p = created.properties.find(id_property_); p != created.properties.end()) {
    live_index_[{type, p->second}] = all.size() - 1;
  }
  return created.id;
}

const HubspotObject* FakeHubspot::live_locked(const std::string& type,
                                              const std::string& id_value) const {
  auto it = live_index_.find({type, id_value});
  if (it == live_index_.end()) return nullptr;
  const HubspotObject& o = objects_.at(type)[it->second];
  return o.archived ? nullptr : &o;
}

const HubspotObject* FakeHubspot::by_id_locked(const std::string& type,
                                               const std::string& hubspot_id) const {
  auto it = id_index_.find({type, hubspot_id});
  return it == id_index_.end() ? nullptr : &objects_.at(type)[it->second];
}

std::optional<std::string> FakeHubspot::rejected_locked(
    const std::map<std::string, std::string>& props) const {
  for (const auto& [property, value] : rejected_values_) {
    auto it = props.find(property);
    if (it != props.end() && it->second == value) return property + "=" + value;
  }
  return std::nullopt;
}

std::string FakeHubspot::correlation_id_locked() {
  char text[48];
  std::snprintf(text, sizeof text, "fa4e0000-0000-4000-8000-%012lx", next_correlation_++);
  return text;
}

// --- the endpoints ------------------------------------------------------------

Answer FakeHubspot::error(int status, const std::string& category, const std::string& message) {
  json::object body;
  body["status"] = "error";
  body["message"] = message;
  body["correlationId"] = correlation_id_locked();
  body["category"] = category;
  return json_answer(status, body);
}

void FakeHubspot::add_rate_headers(Answer& a, int remaining) const {
  a.headers.emplace_back("X-HubSpot-RateLimit-Max", std::to_string(rate_max_));
  a.headers.emplace_back("X-HubSpot-RateLimit-Remaining", std::to_string(std::max(remaining, 0)));
  a.headers.emplace_back("X-HubSpot-RateLimit-Interval-Milliseconds",
                         std::to_string(rate_interval_.count()));
}

// Drops the arrivals that left the window (now - interval, now]; what is left
// of the limit.
int FakeHubspot::remaining_locked(std::chrono::steady_clock::time_point now) {
  while (!accepted_.empty() && accepted_.front() <= now - rate_interval_) accepted_.pop_front();
  return rate_max_ - static_cast<int>(accepted_.size());
}

Answer FakeHubspot::handle(const Received& request) {
  // One lock for the whole request: a batch is applied all or nothing, and
  // concurrent batches apply one after the other, as far as tests can tell.
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();

  if (!has_bearer_token(request)) {
    Answer a = error(401, "INVALID_AUTHENTICATION",
                     "Authentication credentials not found. This API supports OAuth 2.0 "
                     "authentication and you can find more details at "
                     "https://developers.hubspot.com/docs/methods/auth/oauth-overview");
    add_rate_headers(a, remaining_locked(now));
    return a;
  }

  if (remaining_locked(now) <= 0) {
    ++violations_;
    json::object body;
    body["status"] = "error";
    body["message"] = "You have reached your ten_secondly_rolling limit.";
    body["errorType"] = "RATE_LIMIT";
    body["correlationId"] = correlation_id_locked();
    body["policyName"] = "TEN_SECONDLY_ROLLING";
    Answer a = json_answer(429, body);
    add_rate_headers(a, 0);
    return a;
  }
  accepted_.push_back(now);
  const int remaining = remaining_locked(now);

  const std::vector<std::string> p = split_path(request.path);
  Answer a;
  if (request.method != "POST") {
    a = error(404, "OBJECT_NOT_FOUND", "No route for " + request.method + " " + request.path);
  } else if (p.size() == 6 && p[0] == "crm" && p[1] == "v3" && p[2] == "objects" &&
             known_type(p[3]) && p[4] == "batch" &&
             (p[5] == "upsert" || p[5] == "read" || p[5] == "archive")) {
    ++requests_[{p[5], p[3]}];
    if (p[5] == "upsert") {
      a = upsert(p[3], request.body);
    } else if (p[5] == "read") {
      a = read(p[3], request.body);
    } else {
      a = archive(p[3], request.body);
    }
  } else if (p.size() == 8 && p[0] == "crm" && p[1] == "v4" && p[2] == "associations" &&
             known_type(p[3]) && known_type(p[4]) && p[5] == "batch" && p[6] == "associate" &&
             p[7] == "default") {
    ++requests_[{"associate", p[3]}];
    a = associate(p[3], p[4], request.body);
  } else {
    a = error(404, "OBJECT_NOT_FOUND", "No route for " + request.method + " " + request.path);
  }
  add_rate_headers(a, remaining);
  return a;
}

Answer FakeHubspot::upsert(const std::string& type, const std::string& body) {
  const std::string started = iso_now();
  json::value doc;
  std::optional<Invalid> invalid;
  const json::array* inputs = inputs_of(body, kMaxObjectInputs, doc, invalid);
  if (inputs == nullptr) return error(400, "VALIDATION_ERROR", invalid->message);

  // Everything is checked before anything is applied: a bad input fails the
  // whole batch.
  std::vector<std::pair<std::string, std::map<std::string, std::string>>> parsed;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < inputs->size(); ++i) {
    const json::value& input = (*inputs)[i];
    const json::string* id = string_field(input, "id");
    if (id == nullptr) return error(400, "VALIDATION_ERROR", where(i) + ".id is required");
    const json::string* id_property = string_field(input, "idProperty");
    if (id_property == nullptr || *id_property != id_property_) {
      return error(400, "VALIDATION_ERROR",
                   where(i) + ".idProperty must be the unique property " + id_property_);
    }
    const json::value* props = input.as_object().if_contains("properties");
    if (props == nullptr || !props->is_object()) {
      return error(400, "VALIDATION_ERROR", where(i) + ".properties must be an object");
    }
    std::map<std::string, std::string> values;
    for (const auto& [name, value] : props->get_object()) {
      if (!value.is_string()) {
        return error(400, "VALIDATION_ERROR",
                     where(i) + ".properties." + std::string(name) +
                         ": property values must be strings, got " + json::serialize(value));
      }
      values[std::string(name)] = std::string(value.get_string());
    }
    values[id_property_] = std::string(*id);
    if (!seen.insert(std::string(*id)).second) {
      return error(
          400, "VALIDATION_ERROR",
          "Duplicate IDs found in batch input: [" + std::string(*id) + "]. IDs must be unique");
    }
    if (auto bad = rejected_locked(values)) {
      return error(400, "VALIDATION_ERROR",
                   "Property values were not valid: " + where(i) + " (id " + std::string(*id) +
                       ") has " + *bad);
    }
    parsed.emplace_back(std::string(*id), std::move(values));
  }

  json::array results;
  for (auto& [id, values] : parsed) {
    ++upserts_[{type, id}];
    HubspotObject* o = live_locked(type, id);
    const bool created = o == nullptr;
    if (created) {
      const std::string hubspot_id = create_locked(type, std::move(values));
      o = by_id_locked(type, hubspot_id);
    } else {
      for (auto& [name, value] : values) o->properties[name] = std::move(value);
      o->updated_at = iso_now();
    }
    json::object result = object_json(*o, all_properties(*o));
    result["new"] = created;
    results.push_back(std::move(result));
  }
  json::object out = batch_answer(std::move(results), started);
  return json_answer(200, out);
}

Answer FakeHubspot::read(const std::string& type, const std::string& body) {
  const std::string started = iso_now();
  json::value doc;
  std::optional<Invalid> invalid;
  const json::array* inputs = inputs_of(body, kMaxObjectInputs, doc, invalid);
  if (inputs == nullptr) return error(400, "VALIDATION_ERROR", invalid->message);
  const json::object& top = doc.get_object();

  bool by_unique_property = false;
  if (const json::value* v = top.if_contains("idProperty"); v != nullptr && !v->is_null()) {
    const json::string* s = v->if_string();
    if (s != nullptr && *s == id_property_) {
      by_unique_property = true;
    } else if (s == nullptr || *s != "hs_object_id") {
      return error(400, "VALIDATION_ERROR",
                   "idProperty must be " + id_property_ + " or hs_object_id in this fake");
    }
  }
  std::vector<std::string> wanted;
  if (const json::value* v = top.if_contains("properties"); v != nullptr) {
    if (!v->is_array()) return error(400, "VALIDATION_ERROR", "properties must be an array");
    for (const json::value& name : v->get_array()) {
      if (!name.is_string()) {
        return error(400, "VALIDATION_ERROR", "properties must be an array of strings");
      }
      wanted.emplace_back(name.get_string());
    }
  }
  wanted.push_back(id_property_);

  json::array results;
  json::array missing;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < inputs->size(); ++i) {
    const json::string* id = string_field((*inputs)[i], "id");
    if (id == nullptr) return error(400, "VALIDATION_ERROR", where(i) + ".id is required");
    if (!seen.insert(std::string(*id)).second) continue;
    const HubspotObject* o = by_unique_property ? live_locked(type, std::string(*id))
                                                : by_id_locked(type, std::string(*id));
    if (o == nullptr || o->archived) {
      missing.push_back(json::string(*id));
      continue;
    }
    // HubSpot answers a requested property that has no value as null.
    json::object props;
    for (const std::string& name : wanted) {
      auto it = o->properties.find(name);
      props[name] = it == o->properties.end() ? json::value(nullptr) : json::value(it->second);
    }
    results.push_back(object_json(*o, std::move(props)));
  }

  json::object out = batch_answer(std::move(results), started);
  if (missing.empty()) return json_answer(200, out);
  json::object context;
  context["ids"] = std::move(missing);
  json::object e;
  e["status"] = "error";
  e["category"] = "OBJECT_NOT_FOUND";
  e["message"] = "Could not get some " + type +
                 " objects, they may be deleted or not exist. Check that ids are valid.";
  e["context"] = std::move(context);
  json::array errors;
  errors.push_back(std::move(e));
  out["numErrors"] = 1;
  out["errors"] = std::move(errors);
  return json_answer(207, out);
}

Answer FakeHubspot::archive(const std::string& type, const std::string& body) {
  json::value doc;
  std::optional<Invalid> invalid;
  const json::array* inputs = inputs_of(body, kMaxObjectInputs, doc, invalid);
  if (inputs == nullptr) return error(400, "VALIDATION_ERROR", invalid->message);

  std::vector<HubspotObject*> targets;  // unknown and already archived ids are ignored
  for (std::size_t i = 0; i < inputs->size(); ++i) {
    const json::string* id = string_field((*inputs)[i], "id");
    if (id == nullptr) return error(400, "VALIDATION_ERROR", where(i) + ".id is required");
    HubspotObject* o = by_id_locked(type, std::string(*id));
    if (o == nullptr || o->archived) continue;
    if (auto bad = rejected_locked(o->properties)) {
      return error(400, "VALIDATION_ERROR",
                   "Property values were not valid: " + where(i) + " (id " + std::string(*id) +
                       ") has " + *bad);
    }
    targets.push_back(o);
  }
  const std::string now = iso_now();
  for (HubspotObject* o : targets) {
    o->archived = true;
    o->updated_at = now;
  }
  Answer a;
  a.status = 204;
  return a;
}

Answer FakeHubspot::associate(const std::string& from_type, const std::string& to_type,
                              const std::string& body) {
  const std::string started = iso_now();
  const int association_type = default_association_type(from_type, to_type);
  if (association_type == 0) {
    return error(400, "VALIDATION_ERROR",
                 "No default association from " + from_type + " to " + to_type);
  }
  json::value doc;
  std::optional<Invalid> invalid;
  const json::array* inputs = inputs_of(body, kMaxAssociationInputs, doc, invalid);
  if (inputs == nullptr) return error(400, "VALIDATION_ERROR", invalid->message);

  std::vector<Association> wanted;
  for (std::size_t i = 0; i < inputs->size(); ++i) {
    const json::value& input = (*inputs)[i];
    const json::object* o = input.if_object();
    const json::value* from = o ? o->if_contains("from") : nullptr;
    const json::value* to = o ? o->if_contains("to") : nullptr;
    const json::string* from_id = from ? string_field(*from, "id") : nullptr;
    const json::string* to_id = to ? string_field(*to, "id") : nullptr;
    if (from_id == nullptr || to_id == nullptr) {
      return error(400, "VALIDATION_ERROR", where(i) + " needs from.id and to.id");
    }
    for (const auto& [t, id] :
         {std::pair{from_type, std::string(*from_id)}, std::pair{to_type, std::string(*to_id)}}) {
      const HubspotObject* object = by_id_locked(t, id);
      if (object == nullptr || object->archived) {
        return error(400, "VALIDATION_ERROR",
                     where(i) + ": no " + t + " object with id " + id + " exists");
      }
      if (auto bad = rejected_locked(object->properties)) {
        return error(
            400, "VALIDATION_ERROR",
            "Property values were not valid: " + where(i) + " (" + t + " " + id + ") has " + *bad);
      }
    }
    wanted.push_back({from_type, std::string(*from_id), to_type, std::string(*to_id)});
  }

  json::array results;
  for (Association& a : wanted) {
    json::object spec;
    spec["associationCategory"] = "HUBSPOT_DEFINED";
    spec["associationTypeId"] = association_type;
    json::object result;
    result["from"] = json::object{{"id", a.from_id}};
    result["to"] = json::object{{"id", a.to_id}};
    result["associationSpec"] = std::move(spec);
    results.push_back(std::move(result));
    associations_.insert(std::move(a));
  }
  json::object out = batch_answer(std::move(results), started);
  return json_answer(200, out);
}

}  // namespace crm::test
