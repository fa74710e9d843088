#include "ctok/retrieval/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "ctok/core/error.hpp"
#include "ctok/core/random.hpp"
#include "ctok/data/concepts.hpp"

namespace ctok::retrieval {

std::vector<int64_t> ranks(const torch::Tensor& gallery, const torch::Tensor& queries,
                           const std::vector<std::vector<int64_t>>& correct, int64_t chunk) {
  if (gallery.dim() != 2 || queries.dim() != 2 || gallery.size(1) != queries.size(1)) {
    throw bad_input("gallery and query features must be [N, F] and [Q, F] with the same F")
        .found("gallery " + std::to_string(gallery.dim()) + "-d, queries " + std::to_string(queries.dim()) + "-d");
  }
  const int64_t n = gallery.size(0), nq = queries.size(0);
  if (static_cast<int64_t>(correct.size()) != nq) {
    throw bad_input("one list of correct gallery rows per query").expected(std::to_string(nq))
        .found(std::to_string(correct.size()));
  }
  if (n == 0) throw bad_input("empty gallery").expected("at least one gallery item").found("0");
  if (chunk < 1) chunk = 1;
  torch::NoGradGuard no_grad;
  const torch::Tensor g = gallery.to(torch::kFloat32).contiguous();
  const torch::Tensor q = queries.to(torch::kFloat32).contiguous();
  for (int64_t i = 0; i < nq; ++i) {
    const auto& rows = correct[static_cast<std::size_t>(i)];
    if (rows.empty()) throw bad_input("query " + std::to_string(i) + " has no correct gallery item");
    for (int64_t r : rows) {
      if (r < 0 || r >= n) {
        throw bad_input("correct gallery row out of range").expected("[0, " + std::to_string(n) + ")")
            .found(std::to_string(r));
      }
    }
  }
  // Pass 1: the best correct score of each query, read from the same chunked products as
  // pass 2 counts with, so a correct item never counts as scoring above itself.
  std::vector<float> best(static_cast<std::size_t>(nq), -INFINITY);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    const torch::Tensor sc = g.slice(0, s, e).matmul(q.t()).contiguous();  // [c, Q]
    auto acc = sc.accessor<float, 2>();
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t r : correct[static_cast<std::size_t>(i)])
        if (r >= s && r < e) best[static_cast<std::size_t>(i)] = std::max(best[static_cast<std::size_t>(i)], acc[r - s][i]);
  }
  // Pass 2: count gallery rows strictly above it.
  const torch::Tensor best_t = torch::from_blob(best.data(), {1, nq}, torch::kFloat32).clone();
  torch::Tensor above = torch::zeros({nq}, torch::kLong);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    above += (g.slice(0, s, e).matmul(q.t()) > best_t).sum(0);
  }
  std::vector<int64_t> out(static_cast<std::size_t>(nq));
  auto a = above.accessor<int64_t, 1>();
  for (int64_t i = 0; i < nq; ++i) out[static_cast<std::size_t>(i)] = 1 + a[i];
  return out;
}

std::vector<double> reciprocal_ranks(const std::vector<int64_t>& r) {
  std::vector<double> out;
  out.reserve(r.size());
  for (int64_t x : r) out.push_back(1.0 / static_cast<double>(x));
  return out;
}

double mrr(const std::vector<int64_t>& r) {
  if (r.empty()) return 0.0;
  double s = 0;
  for (int64_t x : r) s += 1.0 / static_cast<double>(x);
  return s / static_cast<double>(r.size());
}

double recall_at(const std::vector<int64_t>& r, int64_t k) {
  if (r.empty()) return 0.0;
  return static_cast<double>(std::count_if(r.begin(), r.end(), [k](int64_t x) { return x <= k; })) /
         static_cast<double>(r.size());
}

namespace {

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// Percentile interval of the resampled means of d (the same draws whatever d holds).
Interval percentile_bootstrap(const std::vector<double>& d, const BootstrapOptions& o) {
  if (d.empty()) throw bad_input("bootstrap of an empty sample").expected("at least one concept");
  if (o.resamples < 1 || !(o.level > 0 && o.level < 1)) {
    throw bad_input("bootstrap options out of range").expected("resamples >= 1, 0 < level < 1");
  }
  SplitMix64 g(mix_seed(o.seed, d.size(), 0xB007u));
  std::vector<double> means(static_cast<std::size_t>(o.resamples));
  for (auto& m : means) {
    double s = 0;
    for (std::size_t i = 0; i < d.size(); ++i) s += d[g.below(d.size())];
    m = s / static_cast<double>(d.size());
  }
  std::sort(means.begin(), means.end());
  auto at = [&](double p) {
    const double pos = p * static_cast<double>(means.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, means.size() - 1);
    return means[lo] + (pos - static_cast<double>(lo)) * (means[hi] - means[lo]);
  };
  const double tail = (1 - o.level) / 2;
  return {mean_of(d), at(tail), at(1 - tail)};
}

}  // namespace

Interval bootstrap(const std::vector<double>& values, const BootstrapOptions& options) {
  return percentile_bootstrap(values, options);
}

Interval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                          const BootstrapOptions& options) {
  if (a.size() != b.size()) {
    throw bad_input("paired bootstrap needs the same concepts for both methods")
        .expected(std::to_string(a.size()) + " values").found(std::to_string(b.size()));
  }
  // Resampling concept indices and differencing per concept is the same as resampling the
  // per-concept differences: one draw serves both methods.
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return percentile_bootstrap(d, options);
}

}  // namespace ctok::retrieval
