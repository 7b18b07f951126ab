// The systemd units in deploy/systemd: systemd's own verifier accepts them
// with no complaint, their sandboxing scores "OK" or better in
// `systemd-analyze security`, and the template's hardening is the single
// unit's, line for line.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/commands.h"
#include "daemon/config.h"
#include "daemon/core/time.h"
#include "tests/harness/source_tree.h"

namespace crm {
namespace {

namespace fs = std::filesystem;

using test::read_file;
using test::source_root;

// Runs a shell command; returns its exit status and what it printed
// (stdout and stderr).
std::pair<int, std::string> run(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

const char* kSystemdAnalyze = "/usr/bin/systemd-analyze";

// A copy of a unit whose ExecStart names an executable that exists here
// (the verifier checks it), in a fresh directory.
fs::path unit_copy(const std::string& name, const std::string& as) {
  const fs::path dir = fs::temp_directory_path() / ("crm-worker-units-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string text = read_file(source_root() / "deploy" / "systemd" / name);
  text = std::regex_replace(text, std::regex("/usr/bin/crm-worker"), "/bin/true");
  const fs::path out = dir / as;
  std::ofstream(out) << text;
  return out;
}

// The [Service] lines of a unit, without comments.
std::vector<std::string> service_lines(const std::string& name) {
  std::istringstream in(read_file(source_root() / "deploy" / "systemd" / name));
  std::vector<std::string> lines;
  bool in_service = false;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      in_service = line == "[Service]";
      continue;
    }
    if (in_service) lines.push_back(line);
  }
  return lines;
}

TEST(DeployUnits, SystemdVerifiesBothUnitsWithoutAWord) {
  if (!fs::exists(kSystemdAnalyze)) GTEST_SKIP() << "systemd-analyze is not installed";
  for (const auto& [name, as] : {std::pair<std::string, std::string>{"crm-worker.service", "crm-worker.service"},
                                 {"crm-worker@.service", "crm-worker@main.service"}}) {
    const fs::path unit = unit_copy(name, as);
    const auto [code, out] = run(std::string(kSystemdAnalyze) + " verify " + unit.string());
    EXPECT_EQ(code, 0) << name << ": " << out;
    // An unknown or misspelt key is only a warning, and still a mistake.
    EXPECT_EQ(out, "") << name;
  }
}

TEST(DeployUnits, TheVerifierWouldCatchAMisspeltKey) {
  if (!fs::exists(kSystemdAnalyze)) GTEST_SKIP() << "systemd-analyze is not installed";
  const fs::path unit = unit_copy("crm-worker.service", "crm-worker.service");
  std::string text = read_file(unit);
  std::ofstream(unit) << std::regex_replace(text, std::regex("\nUMask="), "\nUMsk=");
  const auto [code, out] = run(std::string(kSystemdAnalyze) + " verify " + unit.string());
  EXPECT_NE(out.find("Unknown key"), std::string::npos) << out;
}

TEST(DeployUnits, SandboxingScoresOkOrBetter) {
  if (!fs::exists(kSystemdAnalyze)) GTEST_SKIP() << "systemd-analyze is not installed";
  const fs::path unit = unit_copy("crm-worker.service", "crm-worker.service");
  const auto [code, out] = run(std::string(kSystemdAnalyze) + " security --offline=true " + unit.string());
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("Overall exposure level for crm-worker.service: ([0-9.]+)")))
      << out;
  const double exposure = std::stod(m[1]);
  // 0 (best) .. 10; systemd calls up to 2.0 "OK". The README quotes the figure.
  EXPECT_LE(exposure, 2.0) << out;
  std::printf("systemd-analyze security: exposure %.1f\n", exposure);
}

TEST(DeployUnits, TheTemplateIsHardenedExactlyLikeTheSingleUnit) {
  std::vector<std::string> single = service_lines("crm-worker.service");
  std::vector<std::string> templ = service_lines("crm-worker@.service");
  ASSERT_FALSE(single.empty());
  // What differs by design: the instance's configuration, its own
  // environment file and its own state directory.
  const std::vector<std::pair<std::string, std::string>> per_instance = {
      {"ExecStart=/usr/bin/crm-worker run --config /etc/crm-worker/crm-worker.toml",
       "ExecStart=/usr/bin/crm-worker run --config /etc/crm-worker/%i.toml"},
      {"StateDirectory=crm-worker", "StateDirectory=crm-worker/%i"},
  };
  for (const auto& [one, many] : per_instance) {
    auto a = std::find(single.begin(), single.end(), one);
    auto b = std::find(templ.begin(), templ.end(), many);
    ASSERT_NE(a, single.end()) << one;
    ASSERT_NE(b, templ.end()) << many;
    single.erase(a);
    templ.erase(b);
  }
  auto own_env = std::find(templ.begin(), templ.end(), "EnvironmentFile=-/etc/crm-worker/%i.env");
  ASSERT_NE(own_env, templ.end());
  templ.erase(own_env);
  EXPECT_EQ(single, templ);
}

// Value of `key` in a unit's [Service] section ("" if absent).
std::string service_value(const std::string& name, const std::string& key) {
  for (const std::string& line : service_lines(name)) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

TEST(DeployUnits, TheStopTimeoutCoversTheDrainAndOneRequestInFlight) {
  const Config defaults;
  const Millis request = std::max({defaults.hubspot.timeout, defaults.sendgrid.timeout, defaults.slack.timeout});
  for (const char* name : {"crm-worker.service", "crm-worker@.service"}) {
    const std::optional<Millis> stop = parse_duration(service_value(name, "TimeoutStopSec"));
    ASSERT_TRUE(stop) << name;
    EXPECT_GT(*stop, defaults.consumer.drain_timeout + request) << name;
    EXPECT_EQ(service_value(name, "Type"), "notify") << name;
    EXPECT_EQ(service_value(name, "Restart"), "on-failure") << name;
    EXPECT_FALSE(service_value(name, "WatchdogSec").empty()) << name;
    // A configuration error exits 2: restarting would not fix it.
    EXPECT_EQ(service_value(name, "RestartPreventExitStatus"), std::to_string(kExitUsage)) << name;
  }
}

// systemd must restart a worker often enough for the crash guard to
// dead-letter a message that kills it every time (consumer.crash_attempts
// deaths on it alone, after the one in a batch), five times over, before
// it stops restarting.
// A key of any section of a unit (StartLimit* are [Unit] keys).
std::string unit_value(const std::string& name, const std::string& key) {
  std::istringstream in(read_file(source_root() / "deploy" / "systemd" / name));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

TEST(DeployUnits, TheStartLimitLeavesRoomForTheCrashGuard) {
  const Config defaults;
  for (const char* name : {"crm-worker.service", "crm-worker@.service"}) {
    const int burst = std::atoi(unit_value(name, "StartLimitBurst").c_str());
    EXPECT_GT(burst, 5 * (defaults.consumer.crash_attempts + 1)) << name;
    const std::optional<Millis> restart = parse_duration(service_value(name, "RestartSec"));
    const std::optional<Millis> interval = parse_duration(unit_value(name, "StartLimitIntervalSec") + "s");
    ASSERT_TRUE(restart && interval) << name;
    // The deaths fit in the interval only if restarts are not spread out
    // past it; otherwise the limit would never trip at all.
    EXPECT_LT(*restart * burst, *interval) << name;
  }
}

}  // namespace
}  // namespace crm
