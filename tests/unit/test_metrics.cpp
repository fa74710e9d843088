// Retrieval metrics: ranks (chunked), MRR, Recall@K, bootstrap intervals, hand-computed values.
#include <gtest/gtest.h>

#include "ctok/core/error.hpp"
#include "ctok/retrieval/metrics.hpp"

using namespace ctok::retrieval;

namespace {
// gallery rows e_0..e_3 scaled so that the query (1, 0) scores 0.9, 0.5, 0.7, 0.5
torch::Tensor toy_gallery() {
  return torch::tensor({0.9f, 0.1f, 0.5f, 0.2f, 0.7f, 0.3f, 0.5f, 0.4f}).reshape({4, 2});
}
}  // namespace

TEST(Metrics, RanksCountStrictlyHigherItemsForEveryChunkSize) {
  const torch::Tensor g = toy_gallery();
  const torch::Tensor q = torch::tensor({1.f, 0.f, 1.f, 0.f, 1.f, 0.f}).reshape({3, 2});
  // correct: {3} (0.5, tied with row 1: tie does not count) -> 1 + 2 = 3;
  // {1, 2}: best 0.7 -> 2; {0} -> 1
  const std::vector<std::vector<int64_t>> correct = {{3}, {1, 2}, {0}};
  for (int64_t chunk : {1, 2, 3, 4, 100}) {
    EXPECT_EQ(ranks(g, q, correct, chunk), (std::vector<int64_t>{3, 2, 1})) << "chunk " << chunk;
  }
}

TEST(Metrics, MrrAndRecall) {
  const std::vector<int64_t> r = {1, 2, 4, 10, 25};
  EXPECT_NEAR(mrr(r), (1 + 0.5 + 0.25 + 0.1 + 0.04) / 5, 1e-12);
  EXPECT_DOUBLE_EQ(recall_at(r, 1), 0.2);
  EXPECT_DOUBLE_EQ(recall_at(r, 5), 0.6);
  EXPECT_DOUBLE_EQ(recall_at(r, 10), 0.8);
  EXPECT_DOUBLE_EQ(recall_at(r, 20), 0.8);
}

TEST(Metrics, RanksRefuseBadInput) {
  const torch::Tensor g = toy_gallery();
  const torch::Tensor q = torch::tensor({1.f, 0.f}).reshape({1, 2});
  EXPECT_THROW(ranks(g, q, {{}}), ctok::Error);          // no correct item
  EXPECT_THROW(ranks(g, q, {{4}}), ctok::Error);         // out of range
  EXPECT_THROW(ranks(g, q, {{0}, {1}}), ctok::Error);    // one list per query
  EXPECT_THROW(ranks(torch::zeros({0, 2}), q, {{0}}), ctok::Error);  // empty gallery
  EXPECT_THROW(ranks(g, torch::zeros({1, 3}), {{0}}), ctok::Error);  // widths differ
}

TEST(Metrics, BootstrapIsSeededAndBracketsTheMean) {
  const std::vector<double> v = {0.1, 0.9, 0.4, 0.6, 0.2, 0.8, 0.5, 0.3};
  const Interval a = bootstrap(v, {.resamples = 500, .level = 0.95, .seed = 3});
  const Interval b = bootstrap(v, {.resamples = 500, .level = 0.95, .seed = 3});
  EXPECT_DOUBLE_EQ(a.mean, 0.475);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  EXPECT_LT(a.lo, a.mean);
  EXPECT_GT(a.hi, a.mean);
  EXPECT_GE(a.lo, 0.1);
  EXPECT_LE(a.hi, 0.9);
  // A constant sample has a zero-width interval.
  const Interval c = bootstrap({0.25, 0.25, 0.25});
  EXPECT_DOUBLE_EQ(c.lo, 0.25);
  EXPECT_DOUBLE_EQ(c.hi, 0.25);
  EXPECT_THROW(bootstrap({}), ctok::Error);
}

TEST(Metrics, PairedBootstrapUsesTheSameResampleForBothMethods) {
  // b = a - 0.1 for every concept: the paired difference is exactly 0.1 in every resample,
  // although the unpaired spreads of a and b are wide.
  const std::vector<double> a = {0.9, 0.2, 0.7, 0.4, 0.5};
  std::vector<double> b;
  for (double x : a) b.push_back(x - 0.1);
  const Interval d = paired_bootstrap(a, b, {.resamples = 200, .level = 0.95, .seed = 1});
  EXPECT_NEAR(d.mean, 0.1, 1e-12);
  EXPECT_NEAR(d.lo, 0.1, 1e-12);
  EXPECT_NEAR(d.hi, 0.1, 1e-12);
  EXPECT_THROW(paired_bootstrap(a, {0.1}), ctok::Error);
}
