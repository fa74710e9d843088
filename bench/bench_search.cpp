// Exact search speed (issue 12): random unit galleries (default 100k x 128 and 1M x 768)
// with 1000 queries; seconds and GFLOP/s (2 N D Q / s) of
//   retrieval::search_exact  (top-k as chunked matrix products: what ctok-eval, ctok-gair
//                             and ctok-search --exact run),
//   retrieval::ranks         (the evaluation's rank of a known correct row),
//   faiss::IndexFlatIP       (the same exact search in FAISS, what a user would reach for),
// beside the machine's measured GEMM peak in the same run (torch::mm 2048 x 2048, best of 5),
// and the share of queries whose top-1 row agrees between ctok and FAISS. Per thread count.
//
//   build/bin/bench_search [--sizes 100000x128,1000000x768] [--queries 1000] [--k 10]
//                          [--threads 1,2] [--reps 2] [--json out.json]
//
// Best of --reps for each timing; peak RSS (getrusage) printed at the end. bench/bench_search.sh
// runs it under /usr/bin/time -v and prints the Markdown table of docs/results.md.
#include <CLI/CLI.hpp>
#include <faiss/IndexFlat.h>
#include <omp.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ctok/core/threads.hpp"
#include "ctok/retrieval/gallery_store.hpp"
#include "ctok/retrieval/metrics.hpp"

namespace {

double best_of(int reps, const std::function<void()>& f) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

torch::Tensor random_unit(int64_t n, int64_t d, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::empty({n, d}, torch::kFloat32);
  for (int64_t c0 = 0; c0 < n; c0 += 65536) {  // in chunks: no second full-size temporary
    const int64_t c1 = std::min(n, c0 + 65536);
    torch::Tensor c = torch::randn({c1 - c0, d});
    x.slice(0, c0, c1).copy_(c / c.norm(2, 1, true));
  }
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Exact search speed: ctok's chunked matrix products and FAISS IndexFlatIP beside the GEMM peak"};
  std::string sizes = "100000x128,1000000x768", threads = "1,2", json_out;
  int64_t nq = 1000, k = 10;
  int reps = 2;
  app.add_option("--sizes", sizes, "galleries NxD, comma-separated")->capture_default_str();
  app.add_option("--queries", nq, "queries per search")->capture_default_str();
  app.add_option("--k", k, "top-k")->capture_default_str();
  app.add_option("--threads", threads, "thread counts, comma-separated")->capture_default_str();
  app.add_option("--reps", reps, "repetitions (best taken)")->capture_default_str();
  app.add_option("--json", json_out, "also write the numbers as JSON");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::vector<int> counts;
  {
    std::stringstream ss(sizes);
    for (std::string s; std::getline(ss, s, ',');) {
      const auto x = s.find('x');
      shapes.push_back({std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))});
    }
    std::stringstream ts(threads);
    for (std::string s; std::getline(ts, s, ',');) counts.push_back(std::stoi(s));
  }
  torch::NoGradGuard ng;
  nlohmann::json out = nlohmann::json::array();
  std::printf("| gallery | threads | GEMM peak GFLOP/s | search_exact s (GFLOP/s) | ranks s (GFLOP/s) | "
              "FAISS flat add s | FAISS search s (GFLOP/s) | top-1 agreement |\n|---|---|---|---|---|---|---|---|\n");
  for (const auto& [n, d] : shapes) {
    const torch::Tensor g = random_unit(n, d, 1), q = random_unit(nq, d, 2);
    std::vector<std::vector<int64_t>> correct(static_cast<std::size_t>(nq));
    for (int64_t i = 0; i < nq; ++i) correct[static_cast<std::size_t>(i)] = {(i * 7919) % n};
    const double flop = 2.0 * static_cast<double>(n) * static_cast<double>(d) * static_cast<double>(nq);
    for (int t : counts) {
      ctok::configure_threads(t);
      omp_set_num_threads(t);
      const torch::Tensor a = torch::randn({2048, 2048}), b = torch::randn({2048, 2048});
      const double gemm = best_of(5, [&] { torch::mm(a, b); });
      const double peak = 2.0 * 2048.0 * 2048.0 * 2048.0 / gemm / 1e9;
      ctok::retrieval::SearchResult ours;
      const double t_exact = best_of(reps, [&] { ours = ctok::retrieval::search_exact(g, q, k); });
      std::vector<int64_t> rk;
      const double t_ranks = best_of(reps, [&] { rk = ctok::retrieval::ranks(g, q, correct); });
      faiss::IndexFlatIP index(static_cast<int>(d));
      const double t_add = best_of(1, [&] { index.add(n, g.data_ptr<float>()); });
      std::vector<float> fd(static_cast<std::size_t>(nq * k));
      std::vector<faiss::Index::idx_t> fi(static_cast<std::size_t>(nq * k));
      const double t_faiss = best_of(reps, [&] { index.search(nq, q.data_ptr<float>(), k, fd.data(), fi.data()); });
      const auto top1 = ours.indices.select(1, 0).contiguous();
      int64_t agree = 0;
      for (int64_t i = 0; i < nq; ++i) agree += top1.data_ptr<int64_t>()[i] == fi[static_cast<std::size_t>(i * k)];
      const double agreement = static_cast<double>(agree) / static_cast<double>(nq);
      std::printf("| %lld x %lld | %d | %.1f | %.3f (%.1f) | %.3f (%.1f) | %.2f | %.3f (%.1f) | %.3f |\n",
                  static_cast<long long>(n), static_cast<long long>(d), t, peak, t_exact, flop / t_exact / 1e9, t_ranks,
                  flop / t_ranks / 1e9, t_add, t_faiss, flop / t_faiss / 1e9, agreement);
      std::fflush(stdout);
      out.push_back({{"n", n}, {"d", d}, {"queries", nq}, {"k", k}, {"threads", t}, {"gemm_peak_gflops", peak},
                     {"search_exact_s", t_exact}, {"search_exact_gflops", flop / t_exact / 1e9},
                     {"ranks_s", t_ranks}, {"ranks_gflops", flop / t_ranks / 1e9}, {"faiss_add_s", t_add},
                     {"faiss_search_s", t_faiss}, {"faiss_gflops", flop / t_faiss / 1e9}, {"top1_agreement", agreement}});
    }
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("\npeak RSS %.0f MB\n", static_cast<double>(ru.ru_maxrss) / 1024.0);
  if (!json_out.empty()) std::ofstream(json_out) << nlohmann::json{{"runs", out}, {"peak_rss_kb", ru.ru_maxrss}}.dump(2) << "\n";
  return 0;
}
