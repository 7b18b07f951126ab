// Fuzz target: the parsing of HubSpot's answers (http/hubspot.h): batch
// results (upsert and read), the error summary, the daily-limit policy. The
// input is the answer's body; the status is 429 so that every parser reads
// it. What comes out is written to PostgreSQL by the sync executor (the
// HubSpot id into the row, the summary into sync_queue.last_error, both
// through a jsonb parameter), so beyond not crashing:
//   * every result has an id, storable as text;
//   * the summary starts with the status, is one line of at most about 500
//     bytes, and is storable as text.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/support.h"
#include "http/client.h"
#include "http/hubspot.h"

namespace {

// kMaxSummary in http/hubspot.cc, and the ellipsis after a cut.
constexpr std::size_t kMaxSummaryBytes = 500 + std::string_view("…").size();

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  http::Response response;
  response.outcome = http::Outcome::kAnswered;
  response.status = 429;
  response.body.assign(reinterpret_cast<const char*>(data), size);

  if (const auto results = hubspot::parse_results(response.body)) {
    for (const hubspot::Object& object : *results) {
      CRM_FUZZ_CHECK(!object.id.empty());
      CRM_FUZZ_CHECK(fuzz::is_storable_text(object.id));
    }
  }

  const std::string summary = hubspot::error_summary(response);
  CRM_FUZZ_CHECK(summary.starts_with("HubSpot answered 429"));
  CRM_FUZZ_CHECK(summary.size() <= kMaxSummaryBytes);
  CRM_FUZZ_CHECK(summary.find_first_of("\r\n") == std::string::npos);
  CRM_FUZZ_CHECK(fuzz::is_storable_text(summary));

  (void)hubspot::daily_limit_hit(response);
  return 0;
}
