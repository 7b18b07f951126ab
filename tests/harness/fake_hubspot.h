#pragma once
// A small stateful in-memory HubSpot CRM for integration tests: the v3 batch
// object endpoints (upsert, read, archive) for companies, contacts and deals,
// the v4 batch default association, bearer auth, and HubSpot's
// TEN_SECONDLY_ROLLING burst limit (REFERENCE.md section 3). Tests point the
// worker's HubSpot base URL at base_url(), then assert on the resulting state
// (find(), associations()) and on the counters, never on log text.
//
// Built on FakeHttpServer, whose scripted answers take precedence over this
// fake: http().script(path, {...}) puts a 429, a 5xx, a hang or garbage in
// front of the stateful behaviour, and a scripted request changes no state,
// is not rate-limited and carries no rate-limit headers (but is in the ledger,
// and so in max_requests_in_any_interval()).
//
// Where HubSpot's behaviour is undocumented the fake is the stricter choice,
// so that a client bug shows here rather than in production: property values
// must be JSON strings, duplicate ids in one batch are a 400, and batch/read
// without `properties` returns only the id property.
//
// Threads: the server's connection threads run the endpoints; tests call the
// rest from their own thread. Everything is guarded by one mutex.

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/harness/fake_http.h"

namespace crm::test {

struct HubspotObject {
  std::string id;  // HubSpot's id, numeric text, assigned on create ("1001", "1002", ...)
  std::map<std::string, std::string> properties;  // includes the id property
  bool archived = false;
  std::string created_at;  // ISO-8601, as answered
  std::string updated_at;
};

class FakeHubspot {
 public:
  // `id_property`: the unique property the fake accepts as idProperty.
  explicit FakeHubspot(std::string id_property = "crm_id");
  FakeHubspot(const FakeHubspot&) = delete;
  FakeHubspot& operator=(const FakeHubspot&) = delete;

  std::string base_url() const { return http_.base_url(); }
  // To script() failures per path, or read the ledger.
  FakeHttpServer& http() { return http_; }

  // Paths, for scripting and the ledger. `type` is "companies", "contacts" or "deals".
  static std::string upsert_path(const std::string& type);
  static std::string read_path(const std::string& type);
  static std::string archive_path(const std::string& type);
  static std::string associate_path(const std::string& from_type, const std::string& to_type);

  // HubSpot's TEN_SECONDLY_ROLLING burst limit as the fake enforces it: a
  // request is answered 429 (errorType RATE_LIMIT, policyName
  // TEN_SECONDLY_ROLLING) when `max` requests were already accepted in the
  // `interval` before it. Only accepted requests occupy the window, so the
  // accepted ones never exceed `max` in any rolling interval. The time is
  // taken when the fake handles the request (steady clock). Requests without
  // valid auth are answered 401 before the limiter and do not count.
  // Every answer of the fake (success or error; scripted ones excluded)
  // carries X-HubSpot-RateLimit-Max, -Remaining and -Interval-Milliseconds.
  // Default: 100 per 10000 ms.
  void set_rate_limit(int max, std::chrono::milliseconds interval);
  // Requests answered 429 by the limiter.
  int rate_limit_violations() const;
  // The largest number of requests (any path, scripted and refused ones
  // included: the whole ledger, by arrival time) that fell within one rolling
  // interval of the current length, over the whole run. A client that keeps
  // to the limit keeps this <= max.
  int max_requests_in_any_interval() const;

  // Any batch/upsert input whose properties (the id property included) has
  // property == value, or any batch/archive or associate input naming an
  // object whose stored properties have it, makes the WHOLE request fail with
  // 400 VALIDATION_ERROR naming the bad input; nothing in it is applied. As
  // HubSpot does for an invalid property value.
  void reject_value(const std::string& property, const std::string& value);

  // --- state --------------------------------------------------------------
  // The live (not archived) object whose id property is `id_value`.
  std::optional<HubspotObject> find(const std::string& type, const std::string& id_value) const;
  // Any object, archived ones included, by HubSpot id.
  std::optional<HubspotObject> find_by_id(const std::string& type,
                                          const std::string& hubspot_id) const;
  // Every object of `type`, archived ones included, in creation order.
  std::vector<HubspotObject> objects(const std::string& type) const;
  // Default associations made, as (from HubSpot id, to HubSpot id) pairs.
  // Associations are two-way, as in HubSpot: associating a deal with a
  // company shows in associations("deals","companies") and, reversed, in
  // associations("companies","deals").
  std::set<std::pair<std::string, std::string>> associations(const std::string& from_type,
                                                             const std::string& to_type) const;
  // Upsert inputs received for this id property value, successful requests only.
  int upserts_of(const std::string& type, const std::string& id_value) const;
  // Requests that reached an endpoint (authenticated, within the rate limit),
  // whatever their answer. `kind` is "upsert", "read", "archive" or
  // "associate"; `type` "" counts every type (for "associate" it is the from type).
  int requests_of(const std::string& kind, const std::string& type = "") const;
  // Seeds an object as if it had been created in HubSpot (for tests of reads
  // and archives); returns its id. Throws std::invalid_argument for an
  // unknown type, or an id property value already live.
  std::string seed(const std::string& type, std::map<std::string, std::string> properties);

 private:
  struct Association {
    std::string from_type, from_id, to_type, to_id;
    friend auto operator<=>(const Association&, const Association&) = default;
  };

  // The endpoint, on a connection thread; takes mutex_ for the whole request.
  Answer handle(const Received& request);
  // Everything below runs with mutex_ held.
  Answer upsert(const std::string& type, const std::string& body);
  Answer read(const std::string& type, const std::string& body);
  Answer archive(const std::string& type, const std::string& body);
  Answer associate(const std::string& from_type, const std::string& to_type,
                   const std::string& body);
  Answer error(int status, const std::string& category, const std::string& message);
  void add_rate_headers(Answer& a, int remaining) const;
  int remaining_locked(std::chrono::steady_clock::time_point now);
  std::string create_locked(const std::string& type, std::map<std::string, std::string> properties);
  const HubspotObject* live_locked(const std::string& type, const std::string& id_value) const;
  const HubspotObject* by_id_locked(const std::string& type, const std::string& hubspot_id) const;
  HubspotObject* live_locked(const std::string& type, const std::string& id_value) {
    return const_cast<HubspotObject*>(std::as_const(*this).live_locked(type, id_value));
  }
  HubspotObject* by_id_locked(const std::string& type, const std::string& hubspot_id) {
    return const_cast<HubspotObject*>(std::as_const(*this).by_id_locked(type, hubspot_id));
  }
  std::optional<std::string> rejected_locked(const std::map<std::string, std::string>& props) const;
  std::string correlation_id_locked();

  const std::string id_property_;

  mutable std::mutex mutex_;
  int rate_max_ = 100;
  std::chrono::milliseconds rate_interval_{10000};
  std::deque<std::chrono::steady_clock::time_point> accepted_;  // within the interval
  int violations_ = 0;
  std::set<std::pair<std::string, std::string>> rejected_values_;
  long next_id_ = 1001;
  long next_correlation_ = 1;
  // type -> objects in creation order (ids ascending).
  std::map<std::string, std::vector<HubspotObject>> objects_;
  // (type, id property value) -> the live object's index; (type, HubSpot
  // id) -> any object's index. Lookups stay cheap with many objects (the
  // sync benchmark pushes tens of thousands).
  std::map<std::pair<std::string, std::string>, std::size_t> live_index_;
  std::map<std::pair<std::string, std::string>, std::size_t> id_index_;
  std::set<Association> associations_;
  std::map<std::pair<std::string, std::string>, int> upserts_;   // (type, id value)
  std::map<std::pair<std::string, std::string>, int> requests_;  // (kind, type)

  // Last: destroyed first, so its connection threads are joined while the
  // state above they use is still alive.
  FakeHttpServer http_;
};

}  // namespace crm::test
