// Retrieval metrics of the evaluation protocol (docs/method.md §5): ranks from exact
// scores as chunked matrix products, MRR, Recall@K, 95% bootstrap intervals over concepts
// and paired bootstrap intervals of differences between two methods.
//
//   torch::Tensor g = gallery_features;            // [N, F] L2-normalised
//   torch::Tensor q = query_features;              // [Q, F] L2-normalised
//   std::vector<int64_t> r = ctok::retrieval::ranks(g, q, correct /* per query: gallery rows */);
//   double m = ctok::retrieval::mrr(r);
//   auto ci = ctok::retrieval::bootstrap(reciprocal_ranks(r), {.seed = 0});
//   auto d = ctok::retrieval::paired_bootstrap(reciprocal_ranks(r_a), reciprocal_ranks(r_b), {});
//
// Memory stays bounded for big galleries: scores are computed `chunk` gallery rows at a
// time and only counts are kept.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace ctok::retrieval {

// rank of query i = 1 + number of gallery rows scoring strictly above the best-scoring row
// of correct[i]. bad_input when a query has no correct row, a row index is out of range,
// or the shapes disagree. chunk: gallery rows scored per matrix product.
std::vector<int64_t> ranks(const torch::Tensor& gallery, const torch::Tensor& queries,
                           const std::vector<std::vector<int64_t>>& correct, int64_t chunk = 65536);

std::vector<double> reciprocal_ranks(const std::vector<int64_t>& ranks);
double mrr(const std::vector<int64_t>& ranks);
double recall_at(const std::vector<int64_t>& ranks, int64_t k);  // share of ranks <= k

struct BootstrapOptions {
  int resamples = 1000;   // bootstrap resamples (of concepts, with replacement)
  double level = 0.95;    // central interval
  uint64_t seed = 0;      // resampling seed (own generator: the same on every platform)
};

struct Interval {
  double mean = 0, lo = 0, hi = 0;  // statistic on the full sample and its percentile interval
};

// Mean of `values` with a percentile bootstrap interval. bad_input on an empty sample.
Interval bootstrap(const std::vector<double>& values, const BootstrapOptions& options = {});
// mean(a - b) with a bootstrap interval in which each resample draws the same concepts for
// both methods (a and b are per-concept values in the same order). bad_input if the sizes differ.
Interval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                          const BootstrapOptions& options = {});

}  // namespace ctok::retrieval
