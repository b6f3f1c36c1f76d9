#include "kvb/cli/cli.h"
namespace kvb {
int cli_main(int, char**) { return 0; }
}  // namespace kvb
