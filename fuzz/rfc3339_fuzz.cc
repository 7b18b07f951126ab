// Fuzz target: daemon/core/time.h, the RFC 3339 parser every event time
// and data time goes through, and the duration parser of the config.
// Beyond not crashing:
//   * a parsed time lies in 0001-01-01 .. 9999-12-31 (the only years RFC
//     3339 can spell), and format_rfc3339 spells it so that it parses back
//     to the same instant: the handlers store times in that spelling and
//     the projections read them back;
//   * a parsed duration is not negative, and format_duration spells it so
//     that it parses back to the same duration: check-config prints what an
//     operator would write.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/core/time.h"
#include "fuzz/support.h"

namespace {

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z.
constexpr std::int64_t kMinMicros = -62135596800LL * 1'000'000;
constexpr std::int64_t kMaxMicros = 253402300799LL * 1'000'000 + 999'999;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (const std::optional<Timestamp> t = parse_rfc3339(text)) {
    CRM_FUZZ_CHECK(t->micros_since_epoch >= kMinMicros && t->micros_since_epoch <= kMaxMicros);
    const std::string spelled = format_rfc3339(*t);
    CRM_FUZZ_CHECK(spelled.size() == std::string_view("2024-05-01T12:00:00.000000Z").size());
    const std::optional<Timestamp> again = parse_rfc3339(spelled);
    CRM_FUZZ_CHECK(again.has_value() && *again == *t);
    CRM_FUZZ_CHECK(format_rfc3339(*again) == spelled);
  }

  if (const std::optional<Millis> d = parse_duration(text)) {
    CRM_FUZZ_CHECK(d->count() >= 0);
    const std::string spelled = format_duration(*d);
    const std::optional<Millis> again = parse_duration(spelled);
    CRM_FUZZ_CHECK(again.has_value() && *again == *d);
  }
  return 0;
}
