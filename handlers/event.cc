#include "handlers/event.h"

namespace crm {

std::string MessageOrigin::id() const {
  std::string out = topic;
  out += ':';
  out += std::to_string(partition);
  out += ':';
  out += std::to_string(offset);
  if (element >= 0) {
    out += '#';
    out += std::to_string(element);
  }
  return out;
}

}  // namespace crm
