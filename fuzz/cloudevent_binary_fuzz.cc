// Fuzz target: CloudEvents binary mode (queue/decode.h): the attributes
// are ce_* Kafka headers, the value is `data`. The input spells a Kafka
// record as text, so that seeds stay readable:
//
//   @key:p-1                 the Kafka key (absent: no key)
//   ce_specversion:1.0       a header, split at the first ':'; the value is
//   ce_id:evt-9              every byte after it, up to the newline
//   ce_subject               a header without ':' has a null value
//                            an empty line ends the headers
//   {"call_id":"c-1"}        the value: the rest of the input, byte for byte
//
// Without the empty line the value is null (a tombstone). Headers keep
// their order and may repeat. Beyond not crashing: one item, its payload is
// the value, check_item's invariants (fuzz/support.h), and an event's
// attributes are exactly its one ce_* header each.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "fuzz/support.h"
#include "queue/decode.h"

namespace crm::fuzz {
namespace {

queue::RawMessage parse_record(std::string_view text) {
  queue::RawMessage msg;
  msg.origin.topic = "crm.sync.jobs";
  msg.origin.partition = 1;
  msg.origin.offset = 9;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (line.empty()) {
      msg.value = std::string(text);
      break;
    }
    const std::size_t colon = line.find(':');
    const std::string name(line.substr(0, colon));
    std::optional<std::string> value;
    if (colon != std::string_view::npos) value = std::string(line.substr(colon + 1));
    if (name == "@key") {
      msg.key = value.value_or("");
    } else {
      msg.headers.emplace_back(name, std::move(value));
    }
  }
  return msg;
}

// The one value of header `name`, or nullopt if it is absent or repeated.
std::optional<std::string> single_header(const queue::RawMessage& msg, std::string_view name) {
  std::optional<std::string> found;
  int count = 0;
  for (const auto& [n, v] : msg.headers) {
    if (n != name) continue;
    ++count;
    found = v;
  }
  return count == 1 ? found : std::nullopt;
}

}  // namespace
}  // namespace crm::fuzz

// A body nested 100,000 deep (TESTPLAN.md) does not fit -max_len; it is
// decoded once, under the production limits, before fuzzing starts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace crm;
  queue::RawMessage msg = fuzz::parse_record(
      "ce_specversion:1.0\nce_id:e\nce_source:s\nce_type:crm.call.scheduled\n"
      "ce_time:2024-05-01T12:00:00Z\n\n");
  msg.value = std::string(100'000, '[');
  const std::vector<queue::DecodedItem> items = queue::decode_cloudevent(msg, {});
  CRM_FUZZ_CHECK(items.size() == 1 && items.front().error.reason() == "too_deep");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  const queue::DecodeLimits limits = fuzz::fuzz_limits();
  const queue::RawMessage msg =
      fuzz::parse_record(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::vector<queue::DecodedItem> items = queue::decode_cloudevent(msg, limits);
  CRM_FUZZ_CHECK(items.size() == 1);
  const queue::DecodedItem& item = items.front();
  CRM_FUZZ_CHECK(item.payload == msg.value.value_or(""));
  CRM_FUZZ_CHECK(item.origin.id() == msg.origin.id());
  fuzz::check_item(item, limits);
  if (!item.event) return 0;

  const Event& ev = *item.event;
  CRM_FUZZ_CHECK(ev.key == msg.key.value_or(""));
  const bool binary = std::any_of(msg.headers.begin(), msg.headers.end(),
                                  [](const auto& h) { return h.first == "ce_specversion"; });
  if (!binary) return 0;
  // Every ce_* header once and not null, whether the decoder reads it or not.
  for (const auto& [name, value] : msg.headers) {
    if (name.starts_with("ce_")) CRM_FUZZ_CHECK(fuzz::single_header(msg, name).has_value());
  }
  CRM_FUZZ_CHECK(fuzz::single_header(msg, "ce_specversion") == "1.0");
  CRM_FUZZ_CHECK(fuzz::single_header(msg, "ce_id") == ev.id);
  CRM_FUZZ_CHECK(fuzz::single_header(msg, "ce_source") == ev.source);
  CRM_FUZZ_CHECK(fuzz::single_header(msg, "ce_type") == ev.type);
  CRM_FUZZ_CHECK(fuzz::single_header(msg, "ce_time").has_value());
  CRM_FUZZ_CHECK(msg.value.has_value());
  CRM_FUZZ_CHECK(boost::json::value(ev.data) == boost::json::parse(*msg.value));
  return 0;
}
