#pragma once
// The subcommands of `crm-worker` (SPEC.md §2). Each returns the process
// exit code: 0 ok, 2 usage or configuration error, 1 anything else.

#include <string>
#include <vector>

namespace crm {

int cli_main(int argc, char** argv);

int command_run(const std::vector<std::string>& args);
int command_migrate(const std::vector<std::string>& args);
int command_check_config(const std::vector<std::string>& args);
int command_dev_broker(const std::vector<std::string>& args);
int command_dlq(const std::vector<std::string>& args);
int command_followups(const std::vector<std::string>& args);
int command_sync(const std::vector<std::string>& args);
int command_version(const std::vector<std::string>& args);

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace crm
