#include "base/heap_huge_pages.h"

#include <gtest/gtest.h>

namespace longhaul {
namespace {

TEST(HeapHugePages, AddsTheTunableToWhatTheUserSet) {
  EXPECT_EQ(heap_huge_pages_tunables(nullptr), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(heap_huge_pages_tunables(""), "glibc.malloc.hugetlb=1");
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.arena_max=2"), "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1");
  // A tunable whose name only starts like it is another one.
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.hugetlbx=3"), "glibc.malloc.hugetlbx=3:glibc.malloc.hugetlb=1");
}

TEST(HeapHugePages, LeavesTheUsersOwnChoice) {
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.hugetlb=0"), "");
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.hugetlb=2"), "");
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"), "");
  EXPECT_EQ(heap_huge_pages_tunables("glibc.malloc.hugetlb"), "");
}

}  // namespace
}  // namespace longhaul
