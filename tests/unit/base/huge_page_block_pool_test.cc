#include "base/huge_page_block_pool.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

namespace longhaul {
namespace {

constexpr size_t kChunk = size_t{2} << 20;

TEST(HugePageBlockPool, RoundsBlocksToSixtyFourBytesAndFillsWholeHugePages) {
  auto pool = HugePageBlockPool::create(16384);
  EXPECT_EQ(pool->block_bytes(), 16384u);
  EXPECT_EQ(pool->blocks_per_chunk(), 128u);
  EXPECT_EQ(HugePageBlockPool::create(100)->block_bytes(), 128u);
  // A block over one huge page takes a chunk of whole huge pages of its own.
  auto big = HugePageBlockPool::create(3 * kChunk / 2);
  EXPECT_EQ(big->blocks_per_chunk(), 1u);
  auto block = big->allocate<uint8_t>();
  EXPECT_EQ(big->mapped_bytes(), 2 * kChunk);
}

TEST(HugePageBlockPool, ConsecutiveBlocksLieBackToBackZeroedAndAligned) {
  auto pool = HugePageBlockPool::create(16384);
  std::vector<std::shared_ptr<uint16_t[]>> blocks;
  for (int i = 0; i < 10; ++i) blocks.push_back(pool->allocate<uint16_t>());
  for (size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(blocks[i].get()) % 64, 0u);
    if (i > 0) {
      EXPECT_EQ(reinterpret_cast<uint8_t*>(blocks[i].get()) - reinterpret_cast<uint8_t*>(blocks[i - 1].get()), 16384);
    }
    for (size_t e = 0; e < 8192; e += 997) EXPECT_EQ(blocks[i][e], 0);
  }
  EXPECT_EQ(pool->blocks_in_use(), 10u);
  EXPECT_EQ(pool->mapped_bytes(), kChunk);
}

TEST(HugePageBlockPool, AReleasedBlockIsReusedZeroed) {
  auto pool = HugePageBlockPool::create(4096);
  auto a = pool->allocate<uint32_t>();
  auto b = pool->allocate<uint32_t>();
  for (int e = 0; e < 1024; ++e) a[e] = 0xdeadbeef;
  uint32_t* a_address = a.get();
  a.reset();
  EXPECT_EQ(pool->blocks_in_use(), 1u);
  auto c = pool->allocate<uint32_t>();
  EXPECT_EQ(c.get(), a_address);
  for (int e = 0; e < 1024; ++e) ASSERT_EQ(c[e], 0u) << "element " << e;
}

TEST(HugePageBlockPool, EmptyChunksAreUnmappedButOne) {
  auto pool = HugePageBlockPool::create(65536);  // 32 blocks per chunk
  std::vector<std::shared_ptr<uint8_t[]>> blocks;
  for (int i = 0; i < 32 * 4; ++i) blocks.push_back(pool->allocate<uint8_t>());
  EXPECT_EQ(pool->mapped_bytes(), 4 * kChunk);
  std::set<uintptr_t> distinct;
  for (const auto& block : blocks) distinct.insert(reinterpret_cast<uintptr_t>(block.get()));
  EXPECT_EQ(distinct.size(), blocks.size());
  blocks.resize(32);  // the last three chunks' blocks go back: two chunks unmapped, one kept
  EXPECT_EQ(pool->blocks_in_use(), 32u);
  EXPECT_EQ(pool->mapped_bytes(), 2 * kChunk);
  blocks.clear();
  EXPECT_EQ(pool->blocks_in_use(), 0u);
  EXPECT_EQ(pool->mapped_bytes(), kChunk);
  // A half-used chunk stays whatever happens to the others.
  for (int i = 0; i < 48; ++i) blocks.push_back(pool->allocate<uint8_t>());
  EXPECT_EQ(pool->mapped_bytes(), 2 * kChunk);
}

TEST(HugePageBlockPool, BlocksKeepTheirPoolAlive) {
  auto pool = HugePageBlockPool::create(8192);
  auto block = pool->allocate<uint16_t>();
  std::weak_ptr<HugePageBlockPool> watch = pool;
  pool.reset();
  EXPECT_FALSE(watch.expired());
  block[4095] = 7;
  block.reset();
  EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace longhaul
