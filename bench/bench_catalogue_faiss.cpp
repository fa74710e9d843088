// bench_catalogue_faiss: FAISS-only part of the catalogue bench (issue 14).
// Exact (IndexFlatIP) vs IVF-Flat and IVF-PQ on N x D clustered random unit
// vectors: build/train/add time, search latency per query, recall@10 against
// exact, bytes per vector (serialized index size / N).
// Built by CMake (build/bin/bench_catalogue_faiss) when libfaiss is found; or standalone
// (Debian 12, libfaiss-dev 1.7.3):
//   g++ -O2 -std=c++17 -fopenmp bench/bench_catalogue_faiss.cpp \
//       -l:libfaiss.a -lblas -llapack -o /tmp/bench_catalogue_faiss
//   /tmp/bench_catalogue_faiss N D NLIST NPROBE PQ_M
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/index_io.h>
#include <faiss/impl/io.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <vector>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static void normalize(float* v, int d) {
  double s = 0;
  for (int j = 0; j < d; ++j) s += double(v[j]) * v[j];
  float inv = float(1.0 / std::sqrt(s + 1e-12));
  for (int j = 0; j < d; ++j) v[j] *= inv;
}

static size_t serialized_bytes(const faiss::Index* idx) {
  faiss::VectorIOWriter w;
  faiss::write_index(idx, &w);
  return w.data.size();
}

static double recall10(const std::vector<faiss::Index::idx_t>& truth, const std::vector<faiss::Index::idx_t>& got, int nq) {
  size_t hit = 0;
  for (int q = 0; q < nq; ++q) {
    std::set<faiss::Index::idx_t> t(truth.begin() + q * 10, truth.begin() + q * 10 + 10);
    for (int k = 0; k < 10; ++k) hit += t.count(got[q * 10 + k]);
  }
  return double(hit) / (10.0 * nq);
}

int main(int argc, char** argv) {
  const long n = argc > 1 ? atol(argv[1]) : 1000000;
  const int d = argc > 2 ? atoi(argv[2]) : 128;
  const int nlist = argc > 3 ? atoi(argv[3]) : 1024;
  const int nprobe = argc > 4 ? atoi(argv[4]) : 16;
  const int pq_m = argc > 5 ? atoi(argv[5]) : 16;
  const int nq = 100, n_clusters = 2000;
  const long kind_pq_min = 256L * 39;  // PQ codebooks: 256 centroids x 39
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> centers(size_t(n_clusters) * d);
  for (auto& c : centers) c = g(rng);
  std::vector<float> x(size_t(n) * d), q(size_t(nq) * d);
  std::uniform_int_distribution<int> pick(0, n_clusters - 1);
  auto sample = [&](float* v) {
    const float* c = &centers[size_t(pick(rng)) * d];
    for (int j = 0; j < d; ++j) v[j] = c[j] + 0.5f * g(rng);
    normalize(v, d);
  };
  for (long i = 0; i < n; ++i) sample(&x[size_t(i) * d]);
  for (int i = 0; i < nq; ++i) sample(&q[size_t(i) * d]);
  std::printf("n=%ld d=%d nlist=%d nprobe=%d pq_m=%d nq=%d\n", n, d, nlist, nprobe, pq_m, nq);

  std::vector<float> dist(size_t(nq) * 10);
  std::vector<faiss::Index::idx_t> truth(size_t(nq) * 10), got(size_t(nq) * 10);

  faiss::IndexFlatIP flat(d);
  double t0 = now();
  flat.add(n, x.data());
  double t_add = now() - t0;
  t0 = now();
  flat.search(nq, q.data(), 10, dist.data(), truth.data());
  double t_s = now() - t0;
  std::printf("flat      add %.2fs  search %.3f ms/query  recall@10 1.000  bytes/vec %.1f\n", t_add,
              1e3 * t_s / nq, double(serialized_bytes(&flat)) / n);

  const long n_train = std::min<long>(n, std::max<long>(long(nlist) * 39, kind_pq_min));
  for (int kind = 0; kind < 2; ++kind) {
    faiss::IndexFlatIP quant(d);
    std::unique_ptr<faiss::IndexIVF> ivf;
    if (kind == 0)
      ivf.reset(new faiss::IndexIVFFlat(&quant, d, nlist, faiss::METRIC_INNER_PRODUCT));
    else
      ivf.reset(new faiss::IndexIVFPQ(&quant, d, nlist, pq_m, 8, faiss::METRIC_INNER_PRODUCT));
    t0 = now();
    ivf->train(n_train, x.data());
    double t_train = now() - t0;
    t0 = now();
    ivf->add(n, x.data());
    double t_add2 = now() - t0;
    ivf->nprobe = nprobe;
    t0 = now();
    ivf->search(nq, q.data(), 10, dist.data(), got.data());
    double t_s2 = now() - t0;
    std::printf("%s train %.2fs (%ld) add %.2fs  search %.3f ms/query  recall@10 %.3f  bytes/vec %.1f\n",
                kind == 0 ? "ivf-flat " : "ivf-pq   ", t_train, n_train, t_add2, 1e3 * t_s2 / nq,
                recall10(truth, got, nq), double(serialized_bytes(ivf.get())) / n);
    std::fflush(stdout);
  }
  return 0;
}
