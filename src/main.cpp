#include "kvb/cli/cli.h"

int main(int argc, char** argv) { return kvb::cli_main(argc, argv); }
