// Transparent huge pages for the whole heap: re-executes the process once with glibc's `glibc.malloc.hugetlb=1`
// tunable (glibc 2.35+), which glibc reads only at start-up. With it, malloc asks the kernel for huge pages
// (madvise MADV_HUGEPAGE, which Debian's default "madvise" setting requires) for the memory it takes from the
// system.
//
// Why: a step touches many heap buffers besides the weights (which get huge pages of their own, HugePageBuffer):
// the forward pass's activations and scratch, the attention plan, the page summaries a sparse-decode policy scores
// every token, the KV cache's page lists. On 4 KiB pages each of them costs TLB misses and restarts of the hardware
// prefetcher; with the heap on 2 MiB pages the whole-run CPU time of SmolLM2 at depth 16384 fell by 11% on the AMD EPYC
// (docs/benchmarks.md, "The heap and the KV pages on huge pages").
//
// Nothing happens (the call returns) when GLIBC_TUNABLES already names glibc.malloc.hugetlb (the user's choice;
// `glibc.malloc.hugetlb=0` opts out, as does LONGHAUL_HEAP_HUGE_PAGES=0), when the kernel's transparent huge pages
// are "never", in a sanitizer build (whose allocator is not glibc's), or when the re-execution fails. Call it first
// in main, before any thread starts or any input is read: on success it does not return, and the new image starts
// again with the same arguments, environment (plus the tunable), standard streams and process id.
#pragma once

#include <string>

namespace longhaul {

void reexec_with_heap_huge_pages(char** argv);

// The GLIBC_TUNABLES value that adds glibc.malloc.hugetlb=1 to `current` (null or empty: none set; tunables are
// separated by ':'), or "" when `current` already names glibc.malloc.hugetlb.
std::string heap_huge_pages_tunables(const char* current);

}  // namespace longhaul
