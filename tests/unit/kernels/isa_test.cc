// ISA selection: LONGHAUL_ISA parsing and the resolution active_isa() performs (the exit path prints the same
// message resolve_isa returns).
#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/quant.h"

namespace longhaul::kernels {
namespace {

TEST(Isa, ParsesKnownNames) {
  EXPECT_EQ(parse_isa("generic"), Isa::kGeneric);
  EXPECT_EQ(parse_isa("avx2"), Isa::kAvx2);
  EXPECT_EQ(parse_isa("avx512"), Isa::kAvx512);
  EXPECT_EQ(parse_isa("amx"), Isa::kAmx);
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAmx}) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
}

TEST(Isa, RejectsUnknownNames) {
  EXPECT_EQ(parse_isa(""), std::nullopt);
  EXPECT_EQ(parse_isa("AVX2"), std::nullopt);
  EXPECT_EQ(parse_isa("sse4"), std::nullopt);
  EXPECT_EQ(parse_isa("avx"), std::nullopt);
  EXPECT_EQ(parse_isa("avx2 "), std::nullopt);
}

TEST(Isa, ResolveNamesTheBadValue) {
  const Result<Isa> bad = resolve_isa("neon");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.message().find("'neon'"), std::string::npos) << bad.message();
}

TEST(Isa, ResolveDefaultsToBestSupported) {
  const std::vector<Isa> isas = supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kGeneric);
  // amx too: its prompt kernels are chosen by the token's kind, so every token keeps its bits in any step.
  const Isa best_unforced = isas.back();
  EXPECT_EQ(default_isa(), best_unforced);
  EXPECT_EQ(*resolve_isa(nullptr), best_unforced);
  EXPECT_EQ(*resolve_isa(""), best_unforced);
  EXPECT_EQ(*resolve_isa("generic"), Isa::kGeneric);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512, Isa::kAmx}) {
    const bool supported = std::find(isas.begin(), isas.end(), isa) != isas.end();
    const Result<Isa> r = resolve_isa(isa_name(isa));
    EXPECT_EQ(r.is_ok(), supported) << isa_name(isa);
    if (!supported) {
      EXPECT_NE(r.message().find(isa_name(isa)), std::string::npos);
    }
  }
}

TEST(Isa, ActiveIsaIsSupported) {
  const std::vector<Isa> isas = supported_isas();
  EXPECT_NE(std::find(isas.begin(), isas.end(), active_isa()), isas.end());
}

}  // namespace
}  // namespace longhaul::kernels
