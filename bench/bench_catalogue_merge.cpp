// bench_catalogue_merge: the time to merge S shard stores of N rows each (the catalogue
// built on S machines) and to index the merged store (flat, IVF), through the library calls
// ctok-index makes (issue 14). Synthetic clustered unit features, written as shard stores.
//   bench_catalogue_merge [S=4] [N=250000] [DIM=128] [NLIST=1024] [DIR=/tmp/ctok-bench-merge]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "ctok/core/log.hpp"
#include "ctok/core/threads.hpp"
#include "ctok/retrieval/catalogue.hpp"
#include "ctok/retrieval/faiss_index.hpp"
#include "ctok/retrieval/gallery_store.hpp"

namespace fs = std::filesystem;
using namespace ctok;
using namespace ctok::retrieval;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  const int64_t shards = argc > 1 ? std::atoll(argv[1]) : 4;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 250000;
  const int64_t dim = argc > 3 ? std::atoll(argv[3]) : 128;
  const int64_t nlist = argc > 4 ? std::atoll(argv[4]) : 1024;
  const fs::path dir = argc > 5 ? argv[5] : "/tmp/ctok-bench-merge";
  init_logging(-1);
  configure_threads(2, 1);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const int64_t total = shards * n;
  std::vector<GalleryItem> all;
  all.reserve(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) all.push_back({"img/" + std::to_string(i) + ".jpg", std::nullopt, {{"i", i}}});
  const std::string list_sha = gallery_items_digest(all);
  torch::manual_seed(0);
  const torch::Tensor centres = torch::randn({2000, dim});
  std::vector<std::string> parts;
  double t0 = now();
  for (int64_t s = 0; s < shards; ++s) {
    const auto [a, b] = shard_range(total, {s, shards});
    const torch::Tensor f =
        centres.index_select(0, torch::randint(0, 2000, {b - a}, torch::kInt64)) + 0.5 * torch::randn({b - a, dim});
    GalleryInfo like;
    like.bundle_name = "bench";
    like.image_encoder_sha256 = std::string(64, 'b');
    like.preprocessing = {{"size", 224}};
    like.source = {{"kind", "bench"},
                   {"shard", {{"index", s}, {"count", shards}, {"first", a}, {"end", b}, {"total", total},
                              {"list_sha256", list_sha}}}};
    parts.push_back((dir / ("part" + std::to_string(s))).string());
    write_feature_store(parts.back(), like, std::vector<GalleryItem>(all.begin() + a, all.begin() + b), f);
  }
  std::printf("wrote %lld shard stores of %lld x %lld in %.1f s\n", (long long)shards, (long long)n, (long long)dim,
              now() - t0);
  t0 = now();
  const MergeReport r = merge_catalogues(parts, (dir / "merged").string());
  std::printf("merge: %lld rows from %lld shards in %.2f s\n", (long long)r.info.count, (long long)r.inputs, now() - t0);
  for (const std::string spec : {std::string("flat"), "ivf:" + std::to_string(nlist)}) {
    IndexBuildOptions o;
    o.spec = parse_index_spec(spec);
    o.show_progress = false;
    t0 = now();
    const IndexInfo i = build_index((dir / "merged").string(), o);
    std::printf("index %s: %.2f s (trained on %lld rows), %.1f MB, %.1f B/row\n", spec.c_str(), now() - t0,
                (long long)i.trained_on, i.bytes / 1e6, double(i.bytes) / double(i.count));
  }
  fs::remove_all(dir);
  return 0;
}
