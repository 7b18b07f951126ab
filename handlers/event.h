#pragma once
// A decoded event, the unit every handler works on. Built by the decoder
// (queue/decode.h) from a Kafka message: a CloudEvent in structured or binary
// mode, or one element of a SendGrid webhook array.

#include <cstdint>
#include <string>

#include <boost/json.hpp>

#include "daemon/core/time.h"

namespace crm {

// Where a message came from: enough to find it again and to dead-letter it.
struct MessageOrigin {
  std::string topic;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  // Index of the element inside a SendGrid array, -1 for a whole message.
  int element = -1;

  // Stable id of this message (or element): "topic:partition:offset" or
  // "topic:partition:offset#element". Used as the dead_letters id.
  std::string id() const;
};

struct Event {
  std::string id;       // CloudEvents id / SendGrid sg_event_id
  std::string source;   // CloudEvents source
  std::string type;     // e.g. "crm.prospect.discovered"
  Timestamp time;       // when it happened (producer's clock)
  boost::json::object data;
  std::string key;      // Kafka key (prospect id or entity id), may be empty
  MessageOrigin origin;
};

}  // namespace crm
