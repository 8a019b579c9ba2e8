// retrieval: RetrievalAttention (Liu et al., 2024, "RetrievalAttention: Accelerating Long-Context LLM Inference via
// Vector Retrieval"). Every cell is kept; what changes is what a decode query reads. Attention is sparse and which
// keys matter changes from query to query, so each KV head keeps an approximate-nearest-neighbour index (maximum
// inner product) over its keys outside a static pattern, and a decode query reads
//   - the static pattern, exactly: the pages of the first `sink` positions, and those of the last `window` cells
//     (plus the partial last page),
//   - the `k` keys the index returns for each query head of the group (single cells, KvPolicy::PageReads::cells),
// and attention over these is exact: the retrieved keys' softmax is computed together with the static pattern's
// (the paper merges a GPU and a CPU partial attention; here they are one flash pass).
//
// The index: hnswlib's HNSW graph (Malkov and Yashunin, 2018) over the rotated keys, one per (layer, KV head), with
// the cell index as the label. Queries are out of distribution for a graph built from keys alone: a query's best
// keys are often far apart from each other in key space, and a greedy walk from key to key misses them unless it
// scans a large part of the graph (the paper: 30-50% of the keys). RetrievalAttention's fix, after RoarGraph (Chen
// et al., 2024), is to build the graph from the prefill's queries: keys that are among the nearest of the same query
// are linked. Here the policy keeps a sample of the prompt's queries (`probes` per KV head, spread over the prompt),
// and when it builds the index it computes each probe's `probe_k` best keys exactly and links the best of them with
// each of the others, both ways, in the graph's bottom layer (up to half of a node's links; HNSW's own fill the rest).
// A decode query that reaches any of a probe's keys then reaches the others.
//
// Built at the first decode query of a (layer, KV head) over every key outside the static pattern, and extended as
// pages leave the window. A forked sequence rebuilds its indexes by the same steps (same keys, same probes, same
// extensions, same seed), so it retrieves what its parent would.
//
// keys_read counts the cells attention reads plus the keys the index search computed a distance to: both are key
// vectors a decode token reads (the paper's "1-3% of the keys" counts the search's scans).
//
// Memory beyond `full`'s cache: per indexed key and KV head, dk floats (hnswlib stores f32 vectors) and the graph's
// links (2M ints at the bottom layer), about (4 dk + 8 M + 12) bytes; SmolLM2 (dk = 64, M = 16): 396 bytes per key
// and head, 1.55x its f16 key and value.
//
// Deviations: probes are a sample of the prompt's queries (the paper indexes with all of them); keys that leave the
// window after the build are inserted by HNSW's own rule, without probe links; the first `dense` layers and
// sliding-window layers read every page.
// hnswlib 0.6.2's SSE search prefetches the entry one past a full neighbour list, a read past the end of an upper
// layer's list (AddressSanitizer reports it); without its manual vectorization it reads only what it owns, and the
// compiler vectorizes the plain distance loops.
#define NO_MANUAL_VECTORIZATION
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kv/policies/page_selection.h"
#include "kv/policies/placed_pages.h"
#include "kv/policies/shared_params.h"
#include "kv/policy_registry.h"
#include "tensor/half.h"

namespace longhaul::kv {
namespace {

struct RetrievalOptions {
  int32_t top_k = 100;        // keys each query head retrieves per decode step (the paper's top-100)
  int32_t sink_tokens = 4;    // pages holding positions < sink are always read
  int32_t window = 128;       // pages holding one of the last `window` cells are always read
  int32_t page_tokens = 32;   // cells per page: the unit of the static pattern and of the index's extension
  int32_t dense = 0;          // the first `dense` layers read every page
  int32_t probes = 256;       // prompt queries kept per (layer, KV head) to link the graph
  int32_t probe_k = 16;       // each probe's exact nearest keys, linked in the graph
  int32_t m = 16;             // HNSW M: links per node (2M at the bottom layer)
  int32_t ef_construction = 64;  // HNSW build breadth
  int32_t ef = 128;           // HNSW search breadth (>= k is used)
};

// One (layer, KV head)'s index and what rebuilding it takes.
struct HeadIndex {
  struct Probe {
    int32_t position = 0;
    std::vector<float> q;  // [dk] a prompt query (after RoPE, scaled)
  };
  std::vector<Probe> probes;        // the sample of prompt queries, spread over the prompt
  int32_t probe_stride = 1;         // a query is kept when its position is a multiple of this
  std::vector<Probe> build_probes;  // the probes the graph was linked with
  // The cells the index holds, in the batches they were added in: [batch_ends[i - 1], batch_ends[i]) (the first
  // from first_cell); the first batch is the build, linked with build_probes.
  int32_t first_cell = 0;
  std::vector<int32_t> batch_ends;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph;  // null: not built (or to rebuild from batch_ends)
  bool failed = false;  // hnswlib refused (out of memory): read every page

  HeadIndex() = default;
  // A fork copies the recipe; its graph is rebuilt from it on first use.
  HeadIndex(const HeadIndex& o)
      : probes(o.probes), probe_stride(o.probe_stride), build_probes(o.build_probes), first_cell(o.first_cell),
        batch_ends(o.batch_ends), failed(o.failed) {}
  HeadIndex& operator=(const HeadIndex& o) {
    if (this != &o) {
      HeadIndex copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  HeadIndex(HeadIndex&&) = default;
  HeadIndex& operator=(HeadIndex&&) = default;

  int32_t indexed_end() const { return batch_ends.empty() ? first_cell : batch_ends.back(); }
};

class RetrievalPolicy final : public KvPolicy {
 public:
  RetrievalPolicy(KvPolicyContext context, const RetrievalOptions& options)
      : KvPolicy(std::move(context)),
        options_(options),
        // One space for every index: hnswlib's space constructor sets global function pointers (not thread-safe),
        // and each graph keeps a pointer to its space.
        space_(std::make_shared<hnswlib::InnerProductSpace>(static_cast<size_t>(context_.shape.head_dim_k))),
        heads_(context_.shape) {}

  std::unique_ptr<KvPolicy> fork(SeqId, SeqId) const override {
    return std::unique_ptr<KvPolicy>(new RetrievalPolicy(*this));
  }
  std::string name() const override { return "retrieval"; }
  std::string describe() const override {
    const RetrievalOptions& o = options_;
    return "retrieval(k=" + std::to_string(o.top_k) + ", sink=" + std::to_string(o.sink_tokens) +
           ", window=" + std::to_string(o.window) + ", page=" + std::to_string(o.page_tokens) +
           ", dense=" + std::to_string(o.dense) + ", probes=" + std::to_string(o.probes) +
           ", probe_k=" + std::to_string(o.probe_k) + ", m=" + std::to_string(o.m) +
           ", ef_construction=" + std::to_string(o.ef_construction) + ", ef=" + std::to_string(o.ef) + ")";
  }
  int32_t max_cells() const override { return 0; }
  int32_t page_tokens() const override { return options_.page_tokens; }
  bool selects_pages() const override { return true; }
  EvictionPlan plan_eviction(const KvCache&, SeqId, const StepInfo&) const override { return {}; }

  void truncate(KvCache& cache, SeqId seq, int32_t n_cells) override {
    // Cells past the cut are gone: an index holding some is dropped (rebuilt at the next decode query), and the
    // probes of positions past the last kept cell with it.
    const int32_t last_position =
        n_cells > 0 ? cache.positions(seq, 0)[static_cast<size_t>(n_cells) - 1] : -1;
    heads_.for_each([&](HeadIndex& h) {
      if (h.indexed_end() > n_cells) {
        h.batch_ends.clear();
        h.build_probes.clear();
        h.graph.reset();
        h.failed = false;
      }
      std::erase_if(h.probes, [&](const HeadIndex::Probe& p) { return p.position > last_position; });
    });
  }

  std::vector<double> statistics() const override {
    std::vector<double> out;
    heads_.for_each([&](const HeadIndex& h) {
      out.push_back(static_cast<double>(h.probes.size()));
      out.push_back(h.probe_stride);
      out.push_back(h.first_cell);
      for (const int32_t e : h.batch_ends) out.push_back(e);
    });
    return out;
  }

  void select_reads(const PageQuery& query, PageReads& reads) const override {
    reads.placed.clear();
    reads.cells.clear();
    reads.scanned = 0;
    const int32_t n_pages = query.cache.n_pages(query.seq, query.il);
    if (query.il < options_.dense || layer_window(query.il) > 0) {
      select_every_page(n_pages, reads.pages);
      return;
    }
    if (!is_decode_query(query)) {
      heads_.with(query.il, query.kv_head, [&](HeadIndex& h) { keep_probes(query, h); });
      select_every_page(n_pages, reads.pages);
      return;
    }
    const int32_t n_cells = query.cache.n_cells(query.seq, query.il);
    PageCandidates pc;
    classify_pages(query.cache, query.seq, query.il, options_.sink_tokens, n_cells - options_.window, pc);
    // The candidates (pages outside the static pattern) are the index's cells: with no eviction they are one run
    // of pages after the sinks' and before the window's.
    int32_t begin = -1, end = -1;
    for (int32_t ip = 0; ip < n_pages; ++ip)
      if (!pc.always[static_cast<size_t>(ip)]) {
        if (begin < 0) begin = pc.spans[static_cast<size_t>(ip)].first_cell;
        end = pc.spans[static_cast<size_t>(ip)].first_cell + pc.spans[static_cast<size_t>(ip)].n_cells;
      }
    // Too few keys outside the pattern to retrieve from: read them all.
    if (begin < 0 || end - begin <= options_.top_k) {
      select_every_page(n_pages, reads.pages);
      return;
    }
    const bool retrieved = heads_.with(query.il, query.kv_head, [&](HeadIndex& h) {
      if (!update_index(query, h, begin, end)) return false;
      const int32_t group = query.n_q;
      h.graph->setEf(static_cast<size_t>(std::max(options_.ef, options_.top_k)));
      const long scanned_before = h.graph->metric_distance_computations;
      for (int32_t g = 0; g < group; ++g) {
        auto found = h.graph->searchKnn(query.q + static_cast<int64_t>(g) * query.dk,
                                        static_cast<size_t>(options_.top_k));
        for (; !found.empty(); found.pop()) reads.cells.push_back(static_cast<int32_t>(found.top().second));
      }
      reads.scanned = h.graph->metric_distance_computations - scanned_before;
      return true;
    });
    if (!retrieved) {
      reads.cells.clear();
      select_every_page(n_pages, reads.pages);
      return;
    }
    reads.pages.clear();
    for (int32_t ip = 0; ip < n_pages; ++ip)
      if (pc.always[static_cast<size_t>(ip)]) reads.pages.push_back(ip);
  }

 private:
  // Keeps the prompt queries of one select call whose positions are multiples of the stride; when more than
  // `probes` are kept, every other kept position is dropped and the stride doubles, so the sample stays spread
  // over the whole prompt, whatever its length.
  void keep_probes(const PageQuery& query, HeadIndex& h) const {
    if (!h.batch_ends.empty() || options_.probes == 0) return;  // linked already (a later prompt), or no probes
    for (int32_t i = 0; i < query.n_q; ++i) {
      const int32_t pos = query.q_pos[i];
      if (pos % h.probe_stride != 0) continue;
      const float* q = query.q + static_cast<int64_t>(i) * query.dk;
      h.probes.push_back({pos, std::vector<float>(q, q + query.dk)});
    }
    while (static_cast<int32_t>(h.probes.size()) > options_.probes) {
      if (h.probe_stride > (1 << 28)) {  // only position 0 is left, with more query heads than probes
        h.probes.resize(static_cast<size_t>(options_.probes));
        break;
      }
      h.probe_stride *= 2;
      std::erase_if(h.probes, [&](const HeadIndex::Probe& p) { return p.position % h.probe_stride != 0; });
    }
  }

  // The keys of cells [begin, end) of the query's (layer, KV head): f16 rows [end - begin, dk] (zeros where the
  // head's rows were freed).
  static std::vector<uint16_t> cell_keys(const PageQuery& query, int32_t begin, int32_t end) {
    std::vector<uint16_t> keys(static_cast<size_t>(end - begin) * query.dk, 0);
    KvCache::Scratch scratch;
    const int32_t n_pages = query.cache.n_pages(query.seq, query.il);
    for (int32_t ip = 0; ip < n_pages; ++ip) {
      const KvCache::PageSpan span = query.cache.page_span(query.seq, query.il, ip);
      const int32_t lo = std::max(begin, span.first_cell), hi = std::min(end, span.first_cell + span.n_cells);
      if (lo >= hi) continue;
      const KvCache::HeadRows rows =
          query.cache.head_rows(query.seq, query.il, query.kv_head, ip, scratch, true, false);
      if (rows.keys == nullptr) continue;
      std::copy_n(rows.keys + static_cast<int64_t>(lo - span.first_cell) * query.dk,
                  static_cast<int64_t>(hi - lo) * query.dk, keys.data() + static_cast<int64_t>(lo - begin) * query.dk);
    }
    return keys;
  }

  // Adds cells [begin, end) to the graph, in order, labelled by cell index.
  void add_cells(const PageQuery& query, HeadIndex& h, int32_t begin, int32_t end) const {
    const std::vector<uint16_t> keys = cell_keys(query, begin, end);
    if (h.graph->max_elements_ < static_cast<size_t>(h.graph->cur_element_count + (end - begin)))
      h.graph->resizeIndex(std::max<size_t>(2 * h.graph->max_elements_, h.graph->cur_element_count + (end - begin)));
    std::vector<float> key(static_cast<size_t>(query.dk));
    for (int32_t c = begin; c < end; ++c) {
      const uint16_t* k = keys.data() + static_cast<int64_t>(c - begin) * query.dk;
      for (int32_t d = 0; d < query.dk; ++d) key[static_cast<size_t>(d)] = tensor::f16_to_f32(k[d]);
      h.graph->addPoint(key.data(), static_cast<size_t>(c));
    }
  }

  // RoarGraph's projection of the probes onto the keys: for each probe, its probe_k best keys of [begin, end) by
  // exact inner product; the best is linked with each of the others, both ways. A node's bottom-layer list becomes
  // these links first (at most half of it), then its HNSW neighbours, up to the list's size.
  void link_probes(const PageQuery& query, HeadIndex& h, int32_t begin, int32_t end) const {
    const int32_t n = end - begin;
    const std::vector<uint16_t> keys = cell_keys(query, begin, end);
    std::vector<std::vector<uint32_t>> extra(static_cast<size_t>(n));
    const size_t max_extra = h.graph->maxM0_ / 2;
    std::vector<float> scores(static_cast<size_t>(n));
    std::vector<int32_t> order(static_cast<size_t>(n));
    const int32_t kk = std::min(options_.probe_k, n);
    auto link = [&](int32_t from, int32_t to) {
      auto& list = extra[static_cast<size_t>(from)];
      if (list.size() < max_extra && std::find(list.begin(), list.end(), static_cast<uint32_t>(to)) == list.end())
        list.push_back(static_cast<uint32_t>(to));
    };
    for (const HeadIndex::Probe& probe : h.build_probes) {
      kernels::dot_f16_rows(probe.q.data(), keys.data(), query.dk, n, query.dk, scores.data());
      for (int32_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
      std::partial_sort(order.begin(), order.begin() + kk, order.end(), [&](int32_t a, int32_t b) {
        return scores[static_cast<size_t>(a)] > scores[static_cast<size_t>(b)] ||
               (scores[static_cast<size_t>(a)] == scores[static_cast<size_t>(b)] && a < b);
      });
      for (int32_t j = 1; j < kk; ++j) {
        link(order[0], order[static_cast<size_t>(j)]);
        link(order[static_cast<size_t>(j)], order[0]);
      }
    }
    // Labels are cells and internal ids follow insertion: cell begin + i is internal id i.
    for (int32_t i = 0; i < n; ++i) {
      const auto& add = extra[static_cast<size_t>(i)];
      if (add.empty()) continue;
      hnswlib::linklistsizeint* list = h.graph->get_linklist0(static_cast<hnswlib::tableint>(i));
      auto* ids = reinterpret_cast<hnswlib::tableint*>(list + 1);
      const size_t n_old = h.graph->getListCount(list);
      std::vector<hnswlib::tableint> merged(add.begin(), add.end());
      for (size_t j = 0; j < n_old && merged.size() < h.graph->maxM0_; ++j)
        if (std::find(merged.begin(), merged.end(), ids[j]) == merged.end()) merged.push_back(ids[j]);
      std::copy(merged.begin(), merged.end(), ids);
      h.graph->setListCount(list, static_cast<unsigned short>(merged.size()));
    }
  }

  // Makes the index hold the candidates [begin, end): builds it (or rebuilds a fork's by the same steps), then adds
  // the cells that left the window since. False when hnswlib fails.
  bool update_index(const PageQuery& query, HeadIndex& h, int32_t begin, int32_t end) const {
    if (h.failed) return false;
    try {
      if (h.graph == nullptr) {
        if (h.batch_ends.empty()) {  // the first build
          h.first_cell = begin;
          h.batch_ends.push_back(end);
          h.build_probes = h.probes;
        }
        h.graph = std::make_unique<hnswlib::HierarchicalNSW<float>>(
            space_.get(), static_cast<size_t>(h.batch_ends.back() - h.first_cell), static_cast<size_t>(options_.m),
            static_cast<size_t>(options_.ef_construction), /*random_seed=*/100);
        add_cells(query, h, h.first_cell, h.batch_ends.front());
        link_probes(query, h, h.first_cell, h.batch_ends.front());
        for (size_t i = 1; i < h.batch_ends.size(); ++i) add_cells(query, h, h.batch_ends[i - 1], h.batch_ends[i]);
      }
      if (end > h.indexed_end()) {
        add_cells(query, h, h.indexed_end(), end);
        h.batch_ends.push_back(end);
      }
      return true;
    } catch (const std::exception&) {
      h.failed = true;
      h.graph.reset();
      return false;
    }
  }

  RetrievalOptions options_;
  std::shared_ptr<hnswlib::InnerProductSpace> space_;
  PerHeadState<HeadIndex> heads_;
};

}  // namespace

Result<std::unique_ptr<KvPolicy>> make_retrieval_policy(const KvPolicyContext& context, PolicyParams& params) {
  RetrievalOptions o;
  o.top_k = params.get_int("k", o.top_k, 1, 65536, "keys each query head retrieves per decode token");
  o.sink_tokens = params.get_int("sink", o.sink_tokens, 0, kMaxParamCount, "pages of the first positions always read");
  o.window = params.get_int("window", o.window, 1, kMaxParamCount, "pages of the last cells always read");
  o.page_tokens = params.get_int("page", o.page_tokens, 1, 4096, "cells per page");
  o.dense = params.get_int("dense", o.dense, 0, 4096, "first layers that read every page");
  o.probes = params.get_int("probes", o.probes, 0, 65536, "prompt queries per KV head that link the graph");
  o.probe_k = params.get_int("probe_k", o.probe_k, 2, 1024, "each probe's exact nearest keys, linked");
  o.m = params.get_int("m", o.m, 2, 256, "HNSW links per node");
  o.ef_construction = params.get_int("ef_construction", o.ef_construction, 1, 65536, "HNSW build breadth");
  o.ef = params.get_int("ef", o.ef, 1, 65536, "HNSW search breadth");
  if (Status st = params.refusal(); !st.is_ok()) return st;
  if (context.shape.head_dim_k < 1) return Status::error("retrieval: the model's key heads have no dimensions");
  return std::unique_ptr<KvPolicy>(new RetrievalPolicy(context, o));
}

}  // namespace longhaul::kv
