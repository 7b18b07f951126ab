// Fuzz target: the SendGrid mapper (queue/decode.h, decode_sendgrid): the
// input is a SendGrid Event Webhook body, a JSON array of events. Beyond
// not crashing and check_item's invariants (fuzz/support.h):
//   * a whole-message failure is one item (element -1) whose payload is the
//     message; otherwise one item per element, in order;
//   * an event is a crm.email.* type with sg_event_id as its id, source
//     "sendgrid", a key, and the element kept under data.sendgrid;
//   * replaying an element's dead letter, as `dlq replay` does (the payload
//     wrapped in an array), gives the same verdict.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "fuzz/support.h"
#include "queue/decode.h"

namespace crm::fuzz {
namespace {

namespace json = boost::json;

queue::RawMessage message(std::string value) {
  queue::RawMessage msg;
  msg.origin.topic = "sendgrid.events";
  msg.origin.partition = 2;
  msg.origin.offset = 11;
  msg.value = std::move(value);
  return msg;
}

void check_event(const json::value& element, const Event& ev) {
  CRM_FUZZ_CHECK(ev.type.starts_with("crm.email."));
  CRM_FUZZ_CHECK(ev.source == "sendgrid");
  CRM_FUZZ_CHECK(!ev.key.empty());
  const json::object& obj = element.as_object();
  CRM_FUZZ_CHECK(obj.contains("sg_event_id") && obj.at("sg_event_id").as_string() == ev.id);
  CRM_FUZZ_CHECK(ev.data.contains("sendgrid") && ev.data.at("sendgrid") == element);
  CRM_FUZZ_CHECK(ev.data.contains("machine_open") && ev.data.at("machine_open").is_bool());
  CRM_FUZZ_CHECK(ev.time.micros_since_epoch >= 0 && ev.time.micros_since_epoch % 1'000'000 == 0);
}

// What a dead letter of this element decodes to when replayed.
void check_replay(const queue::DecodedItem& item, const queue::DecodeLimits& limits) {
  const std::vector<queue::DecodedItem> again =
      queue::decode_sendgrid(message("[" + item.payload + "]"), limits);
  CRM_FUZZ_CHECK(again.size() == 1);
  const queue::DecodedItem& replayed = again.front();
  // Serializing may respell a number longer ("0.1" is "1E-1"): an element
  // near the size limit may then be too large on its own.
  if (replayed.error.reason() == "too_large") return;
  CRM_FUZZ_CHECK(replayed.error.reason() == item.error.reason());
  CRM_FUZZ_CHECK(replayed.event.has_value() == item.event.has_value());
  if (!item.event) return;
  CRM_FUZZ_CHECK(replayed.event->id == item.event->id);
  CRM_FUZZ_CHECK(replayed.event->type == item.event->type);
  CRM_FUZZ_CHECK(replayed.event->time == item.event->time);
  CRM_FUZZ_CHECK(replayed.event->key == item.event->key);
  CRM_FUZZ_CHECK(same_json(replayed.event->data, item.event->data));
}

std::vector<queue::DecodedItem> decode(std::string value) {
  return queue::decode_sendgrid(message(std::move(value)), {});
}

}  // namespace
}  // namespace crm::fuzz

// The poison set's oversized members (TESTPLAN.md) fit neither a seed file
// nor -max_len; they are decoded once, under the production limits, before
// fuzzing starts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using crm::fuzz::decode;
  std::string million = "[";
  for (int i = 0; i < 1'000'000; ++i) million += i ? ",{}" : "{}";
  million += "]";
  auto items = decode(million);
  CRM_FUZZ_CHECK(items.size() == 1 && items.front().error.reason() == "too_large");
  // Just under the byte limit but over the element limit.
  std::string many = "[";
  for (int i = 0; i < 20'000; ++i) many += i ? ",0" : "0";
  many += "]";
  items = decode(many);
  CRM_FUZZ_CHECK(items.size() == 1 && items.front().error.reason() == "too_many_elements");
  items = decode("[" + std::string(100'000, '[') + "]");
  CRM_FUZZ_CHECK(items.size() == 1 && items.front().error.reason() == "too_deep");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace crm;
  namespace json = boost::json;
  const queue::DecodeLimits limits = fuzz::fuzz_limits();
  const queue::RawMessage msg =
      fuzz::message(std::string(reinterpret_cast<const char*>(data), size));
  const std::vector<queue::DecodedItem> items = queue::decode_sendgrid(msg, limits);

  const Result<json::value> parsed = queue::parse_json_limited(*msg.value, limits);
  const bool whole =
      !parsed || !parsed->is_array() ||
      parsed->get_array().size() > static_cast<std::size_t>(limits.max_batch_elements);
  if (whole) {
    CRM_FUZZ_CHECK(items.size() == 1);
    CRM_FUZZ_CHECK(!items.front().event.has_value());
    CRM_FUZZ_CHECK(items.front().origin.element == -1);
    CRM_FUZZ_CHECK(items.front().payload == *msg.value);
    fuzz::check_item(items.front(), limits);
    return 0;
  }
  const json::array& elements = parsed->get_array();
  CRM_FUZZ_CHECK(items.size() == elements.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const queue::DecodedItem& item = items[i];
    CRM_FUZZ_CHECK(item.origin.element == static_cast<int>(i));
    CRM_FUZZ_CHECK(item.payload == json::serialize(elements[i]));
    fuzz::check_item(item, limits);
    if (item.event) fuzz::check_event(elements[i], *item.event);
    fuzz::check_replay(item, limits);
  }
  return 0;
}
