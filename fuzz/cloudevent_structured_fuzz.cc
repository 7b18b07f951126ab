// Fuzz target: CloudEvents structured mode (queue/decode.h). The input is
// the Kafka value, the whole event as JSON; no ce_* headers, so
// decode_cloudevent takes the structured path. Beyond not crashing: one
// item, carrying the value byte for byte as its dead-letter payload, and
// everything check_item (fuzz/support.h) holds every item to.

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/support.h"
#include "queue/decode.h"

namespace crm::fuzz {
namespace {

constexpr const char* kKey = "p-1";

queue::RawMessage message(std::string value) {
  queue::RawMessage msg;
  msg.origin.topic = "crm.outreach.events";
  msg.origin.partition = 0;
  msg.origin.offset = 7;
  msg.key = kKey;
  msg.value = std::move(value);
  return msg;
}

std::string only_reason(const std::string& value) {
  const std::vector<queue::DecodedItem> items = queue::decode_cloudevent(message(value), {});
  CRM_FUZZ_CHECK(items.size() == 1);
  return items.front().error.reason();
}

}  // namespace
}  // namespace crm::fuzz

// The poison set's oversized members (TESTPLAN.md) fit neither a seed file
// nor -max_len; they are decoded once, under the production limits, before
// fuzzing starts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using crm::fuzz::only_reason;
  CRM_FUZZ_CHECK(only_reason(std::string(100'000, '[')) == "too_deep");
  std::string objects;
  for (int i = 0; i < 100'000; ++i) objects += "{\"a\":";
  CRM_FUZZ_CHECK(only_reason(objects) == "too_deep");
  const std::string ten_mb_name =
      R"({"specversion":"1.0","id":"e","source":"s","type":"crm.prospect.discovered",)"
      R"("time":"2024-05-01T12:00:00Z","data":{"name":")" +
      std::string(10 << 20, 'a') + "\"}}";
  CRM_FUZZ_CHECK(only_reason(ten_mb_name) == "too_large");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  const queue::DecodeLimits limits = fuzz::fuzz_limits();
  const queue::RawMessage msg =
      fuzz::message(std::string(reinterpret_cast<const char*>(data), size));
  const std::vector<queue::DecodedItem> items = queue::decode_cloudevent(msg, limits);
  CRM_FUZZ_CHECK(items.size() == 1);
  const queue::DecodedItem& item = items.front();
  CRM_FUZZ_CHECK(item.payload == *msg.value);
  CRM_FUZZ_CHECK(item.origin.id() == msg.origin.id());
  fuzz::check_item(item, limits);
  if (item.event) CRM_FUZZ_CHECK(item.event->key == fuzz::kKey);
  return 0;
}
