// main() of the tests that need root and loop devices (mounted_*_test):
// without them the binary prints why and exits 77, which meson counts as a
// skip; with them it runs every test.
#include <cstdio>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "testutil.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (!ext4dio::testing::CanUseLoopDevices(&why)) {
    const char* slash = std::strrchr(argv[0], '/');
    std::printf("SKIP %s: %s\n", slash ? slash + 1 : argv[0], why.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
