#pragma once
// One line per record on stderr: JSON by default ({"ts":..,"level":..,
// "msg":..,<fields>}), or "ts LEVEL msg k=v" text. Thread-safe; the level can
// be changed at run time (SIGHUP reload). Never pass a secret as a field: the
// logger cannot know what is secret.
//
//   log::info("batch applied", {{"events", 12}, {"topic", t}});

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace crm::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// A field value: text or a number or a bool.
using Value = std::variant<std::string, long long, double, bool>;
struct Field {
  std::string key;
  Value value;
  Field(std::string k, std::string v) : key(std::move(k)), value(std::move(v)) {}
  Field(std::string k, std::string_view v) : key(std::move(k)), value(std::string(v)) {}
  Field(std::string k, const char* v) : key(std::move(k)), value(std::string(v)) {}
  Field(std::string k, int v) : key(std::move(k)), value(static_cast<long long>(v)) {}
  Field(std::string k, long v) : key(std::move(k)), value(static_cast<long long>(v)) {}
  Field(std::string k, long long v) : key(std::move(k)), value(v) {}
  Field(std::string k, unsigned v) : key(std::move(k)), value(static_cast<long long>(v)) {}
  Field(std::string k, unsigned long v) : key(std::move(k)), value(static_cast<long long>(v)) {}
  Field(std::string k, double v) : key(std::move(k)), value(v) {}
  Field(std::string k, bool v) : key(std::move(k)), value(v) {}
};
using Fields = std::initializer_list<Field>;

// Returns false if `name` is not one of debug, info, warn, error.
bool parse_level(std::string_view name, Level* out);
void set_level(Level level);
Level level();
void set_json(bool json);  // false = text
bool enabled(Level level);

void write(Level level, std::string_view msg, Fields fields = {});
inline void debug(std::string_view m, Fields f = {}) { if (enabled(Level::kDebug)) write(Level::kDebug, m, f); }
inline void info(std::string_view m, Fields f = {}) { if (enabled(Level::kInfo)) write(Level::kInfo, m, f); }
inline void warn(std::string_view m, Fields f = {}) { if (enabled(Level::kWarn)) write(Level::kWarn, m, f); }
inline void error(std::string_view m, Fields f = {}) { if (enabled(Level::kError)) write(Level::kError, m, f); }

}  // namespace crm::log
