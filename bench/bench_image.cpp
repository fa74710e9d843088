// Image pipeline throughput: decode + crop + resize + normalise (load_batch), images/s,
// with 1 thread and with all cores, on generated 64x64 and 640x480 JPEGs.
//
//   build/bin/bench_image [--count-small 2000] [--count-large 200] [--size 224] [--repeats 3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "ctok/core/error.hpp"
#include "ctok/image/image.hpp"

namespace fs = std::filesystem;
using namespace ctok::image;

namespace {

// Photo-like content: smooth gradients plus mild noise, so JPEG sizes are realistic.
Image synthetic(int w, int h, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-12, 12);
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
  const int phase = static_cast<int>(seed % 97);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &im.rgb[(static_cast<std::size_t>(y) * w + x) * 3];
      const int base[3] = {(x * 255) / w, (y * 255) / h, ((x + y + phase) * 3) % 256};
      for (int c = 0; c < 3; ++c) p[c] = static_cast<uint8_t>(std::clamp(base[c] + noise(rng), 0, 255));
    }
  return im;
}

std::vector<LoadRequest> make_files(const fs::path& dir, int w, int h, int count) {
  std::vector<LoadRequest> requests;
  for (int i = 0; i < count; ++i) {
    const std::vector<uint8_t> jpeg = encode_jpeg(synthetic(w, h, static_cast<unsigned>(i)), 90);
    const fs::path path =
        dir / (std::to_string(w) + "x" + std::to_string(h) + "_" + std::to_string(i) + ".jpg");
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
    // A box that trims 5% on each side, as a dataset's bounding box would; alternate flips.
    LoadRequest r{path.string(), Box{w / 20, h / 20, w - w / 20, h - h / 20}, i % 2 == 1};
    requests.push_back(r);
  }
  return requests;
}

struct Result {
  double per_second = 0;  // wall clock, best run
  double cpu_ms = 0;      // process CPU time per image, best run: independent of machine load
};

Result measure(const std::vector<LoadRequest>& requests, int threads, int size, int repeats) {
  LoadOptions options;
  options.preprocess = {size, kClipMean, kClipStd};
  options.threads = threads;
  load_batch(requests, options);  // warm the page cache and allocator
  Result best;
  best.cpu_ms = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const std::clock_t c0 = std::clock();
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = load_batch(requests, options);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = 1000.0 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    best.per_second = std::max(best.per_second, static_cast<double>(out.size()) / s);
    best.cpu_ms = std::min(best.cpu_ms, cpu / static_cast<double>(out.size()));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Image pipeline throughput (decode + crop + resize + normalise)"};
  int count_small = 2000, count_large = 200, size = 224, repeats = 3;
  app.add_option("--count-small", count_small, "number of 64x64 JPEGs");
  app.add_option("--count-large", count_large, "number of 640x480 JPEGs");
  app.add_option("--size", size, "preprocess size (shorter side, then centre crop)");
  app.add_option("--repeats", repeats, "timed runs per cell; the best is reported");
  CLI11_PARSE(app, argc, argv);
  try {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const fs::path dir = fs::temp_directory_path() / ("ctok_bench_image_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    struct Set {
      const char* name;
      std::vector<LoadRequest> requests;
    };
    std::vector<Set> sets;
    sets.push_back({"64x64 JPEG", make_files(dir, 64, 64, count_small)});
    sets.push_back({"640x480 JPEG", make_files(dir, 640, 480, count_large)});

    std::printf("decode + crop (90%% box) + hflip (every other) + resize + centre crop %d + normalise\n",
                size);
    std::printf(
        "cores: %d, best of %d runs; CPU ms/image is process CPU time (all threads) per image,\n"
        "which a busy machine does not inflate as much as wall-clock throughput\n\n",
        cores, repeats);
    std::printf("| %-13s | %6s | %12s | %12s | %7s | %14s | %14s |\n", "input", "images", "1 thread",
                "all cores", "speedup", "CPU ms/img (1)", "CPU ms/img (N)");
    std::printf(
        "|---------------|--------|--------------|--------------|---------|----------------|----------------|"
        "\n");
    for (const Set& s : sets) {
      const Result one = measure(s.requests, 1, size, repeats);
      const Result all = measure(s.requests, cores, size, repeats);
      std::printf("| %-13s | %6zu | %8.0f /s  | %8.0f /s  | %6.2fx | %14.2f | %14.2f |\n", s.name,
                  s.requests.size(), one.per_second, all.per_second, all.per_second / one.per_second,
                  one.cpu_ms, all.cpu_ms);
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  } catch (const ctok::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
