#pragma once
// The event stream the outreach benchmarks share: about `n` distinct mixed
// outreach events (every type of SPEC.md §4 and SendGrid webhook arrays)
// from one seeded history, and the same with ~10% sent again, shuffled.

#include <algorithm>
#include <cstddef>
#include <random>
#include <vector>

#include "tests/harness/outreach_history.h"

namespace crm::test {

inline std::vector<HistoryEvent> distinct_events(size_t n) {
  HistoryShape shape;
  shape.prospects = static_cast<int>(std::max<size_t>(1, n / 15));
  std::vector<HistoryEvent> all = outreach_history(20261121, shape);
  if (all.size() > n) all.resize(n);
  return all;
}

inline std::vector<HistoryEvent> with_duplicates(const std::vector<HistoryEvent>& events) {
  std::mt19937 rng(7);
  std::vector<HistoryEvent> out = events;
  for (size_t d = 0; d < events.size() / 10; ++d) out.push_back(events[rng() % events.size()]);
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

}  // namespace crm::test
