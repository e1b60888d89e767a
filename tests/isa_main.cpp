// GoogleTest main for the op tests, which CTest runs once per SIMD target (tests/CMakeLists.txt):
// with TBGRAD_MAX_ISA=<target> set, every test is skipped, with the reason, when this CPU
// lacks <target> or when <target> is its best one (the default run already covers that), and
// fails if the cap did not take effect.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tbgrad.hpp>

namespace {

class TargetEnvironment : public testing::Environment {
 public:
  void SetUp() override {
    const char* want = std::getenv("TBGRAD_MAX_ISA");
    if (want == nullptr || *want == '\0') return;
    const std::vector<std::string> supported = tbgrad::supported_isas();
    if (std::find(supported.begin(), supported.end(), want) == supported.end()) {
      GTEST_SKIP() << "this CPU does not support SIMD target " << want;
    }
    if (supported.front() == want) {
      GTEST_SKIP() << want << " is this CPU's best SIMD target, tested by the default run";
    }
    ASSERT_EQ(tbgrad::isa(), want) << "TBGRAD_MAX_ISA did not take effect";
  }
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  testing::AddGlobalTestEnvironment(new TargetEnvironment);
  return RUN_ALL_TESTS();
}
