#pragma once
// Lists of ids as one SQL parameter: a PostgreSQL array literal, bound as
// `$1::text[]` and read with `= ANY ($1::text[])` or `unnest($1::text[])`.
//
// Not JSON (jsonb_array_elements_text): the planner has no idea how many
// elements a JSON array holds and guesses 100, which at a few thousand
// rows already turns every per-batch recomputation into a sequential scan
// of the timeline. An array parameter of an unnamed statement is a
// constant when the statement is planned, so `= ANY` and `unnest` are
// estimated from its real length and the indexes are used.

#include <string>
#include <string_view>

namespace crm::db {

// '{"a","b\"c"}': every element quoted, backslash and double quote escaped,
// so no element is read as NULL, split at a comma or trimmed.
template <typename Range>
std::string text_array(const Range& values) {
  std::string out = "{";
  for (const auto& v : values) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : std::string_view(v)) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace crm::db
