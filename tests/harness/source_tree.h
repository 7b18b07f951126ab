#pragma once
// The repository's own files, for tests of what is shipped (the example
// configuration, the systemd units, the dashboard and alert rules). Header
// only, so the unit tests (which do not link the harness) use it too.

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace crm::test {

// tests/harness/source_tree.h → the repository root: __FILE__ is the path
// the compiler was given, so no compile definition is needed.
inline std::filesystem::path source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

// The whole file ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace crm::test
