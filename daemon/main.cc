#include "daemon/commands.h"

int main(int argc, char** argv) { return crm::cli_main(argc, argv); }
