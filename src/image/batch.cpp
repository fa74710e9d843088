// Parallel batch loading: a fixed pool of std::threads pulling indices from an atomic
// counter. Each image is decoded, cropped, flipped and preprocessed on one thread; the
// per-image path calls no OpenCV function that uses OpenCV's own (TBB) thread pool
// (imdecode is sequential, colour conversion and resize are our own loops), so N workers
// use N cores and nothing more.
#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "cv_util.hpp"

namespace ctok::image {
namespace {

FloatImage load_one(const LoadRequest& request, const LoadOptions& options) {
  Image image = decode_file(request.path, options.decode);
  try {
    if (request.box) image = crop(image, *request.box);
    if (request.hflip) image = hflip(image);
    return preprocess(image, options.preprocess);
  } catch (Error& e) {
    if (e.file_context().empty()) e.file(request.path);  // name the file in crop/preprocess errors too
    throw;
  }
}

std::string message_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace

std::vector<FloatImage> load_batch(const std::vector<LoadRequest>& requests, const LoadOptions& options,
                                   std::vector<LoadFailure>* failures) {
  if (options.threads < 0)
    throw bad_input("load_batch: threads must be >= 0").found(std::to_string(options.threads));
  if (options.preprocess.size <= 0)
    throw bad_input("load_batch: preprocess size must be positive")
        .found(std::to_string(options.preprocess.size));
  if (failures) failures->clear();
  const std::size_t n = requests.size();
  std::vector<FloatImage> out(n);
  if (n == 0) return out;
  std::size_t threads = options.threads > 0 ? static_cast<std::size_t>(options.threads)
                                            : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, n);

  std::vector<std::exception_ptr> errors(n);
  std::atomic<std::size_t> next{0};
  // Without skip_bad, indices after the first known failure need no work; every index
  // before it is still processed, so the error thrown is always the lowest failing index.
  std::atomic<std::size_t> first_failure{n};
  auto worker = [&]() {
    for (;;) {
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      if (!options.skip_bad && i > first_failure.load(std::memory_order_relaxed)) continue;
      try {
        out[i] = load_one(requests[i], options);
      } catch (...) {
        errors[i] = std::current_exception();
        std::size_t seen = first_failure.load();
        while (i < seen && !first_failure.compare_exchange_weak(seen, i)) {
        }
      }
    }
  };
  if (threads == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads);
    try {
      for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    } catch (...) {  // could not start a thread: finish with the ones we have
      if (pool.empty()) worker();
    }
    for (auto& t : pool) t.join();
  }

  if (!options.skip_bad) {
    const std::size_t first = first_failure.load();
    if (first < n) std::rethrow_exception(errors[first]);
    return out;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!errors[i]) continue;
    out[i] = FloatImage{};
    out[i].data.clear();
    if (failures) failures->push_back({i, requests[i].path, message_of(errors[i])});
  }
  return out;
}

}  // namespace ctok::image
