// The file side of the DeepFashion2 reader: annotation files, their images (existence and
// size, for clamping), whole splits in parallel. Kept apart from deepfashion2.cpp so that the
// parser builds alone (tests/fuzz links it without OpenCV or libtorch).
#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <system_error>
#include <thread>

#include "ctok/core/error.hpp"
#include "ctok/core/fs.hpp"
#include "ctok/data/deepfashion2.hpp"
#include "image_size.hpp"

namespace ctok::data {
namespace fs = std::filesystem;

Annotation read_annotation(const std::string& anno_path, const std::string& image_path, bool check_image) {
  std::error_code ec;
  const auto size = fs::file_size(anno_path, ec);
  if (!ec && size > kMaxAnnotationBytes) {
    throw bad_input("annotation file too large").file(anno_path)
        .expected("at most " + std::to_string(kMaxAnnotationBytes) + " bytes").found(std::to_string(size) + " bytes");
  }
  Annotation a = parse_annotation(read_text_file(anno_path), anno_path);
  a.stem = fs::path(anno_path).stem().string();
  a.image_path = image_path;
  if (a.image_path.empty()) {
    a.image_path = (fs::path(anno_path).parent_path().parent_path() / "image" / (a.stem + ".jpg")).string();
  }
  if (check_image) {
    if (!file_exists(a.image_path)) {
      throw bad_input("image missing for the annotation " + anno_path).file(a.image_path)
          .expected("<split>/image/<stem>.jpg next to <split>/annos/<stem>.json");
    }
    const detail::PixelSize size = detail::image_size(a.image_path);
    fit_boxes(a, size.width, size.height);
  }
  return a;
}

Split read_split(const std::string& root, const std::string& split, const SplitOptions& options) {
  Split out;
  out.root = root;
  out.name = split;
  out.dir = (fs::path(root) / split).string();
  const fs::path annos = fs::path(out.dir) / "annos";
  std::error_code ec;
  if (!fs::is_directory(annos, ec)) {
    throw bad_input("not a DeepFashion2-layout split: no annos/ folder").file(annos.string())
        .expected("<root>/<split>/annos/*.json and <root>/<split>/image/*.jpg");
  }
  std::vector<std::string> files;
  fs::directory_iterator dir(annos, ec), end;
  if (ec) throw bad_input("cannot read the folder: " + ec.message()).file(annos.string());
  for (; dir != end; dir.increment(ec)) {
    if (ec) throw bad_input("cannot read the folder: " + ec.message()).file(annos.string());
    const fs::path& p = dir->path();
    if (p.extension() == ".json" && p.filename().string()[0] != '.') files.push_back(p.string());
  }
  if (files.empty()) throw bad_input("no annotation (*.json) in the folder").file(annos.string());
  std::sort(files.begin(), files.end());

  const fs::path image_dir = fs::path(out.dir) / "image";
  if (options.check_images && !fs::is_directory(image_dir, ec)) {
    throw bad_input("not a DeepFashion2-layout split: no image/ folder").file(image_dir.string())
        .expected("<root>/<split>/annos/*.json and <root>/<split>/image/*.jpg");
  }
  std::vector<Annotation> parsed(files.size());
  std::vector<std::string> errors(files.size());
  std::vector<char> bad(files.size(), 0);  // not vector<bool>: threads write neighbouring entries
  std::vector<std::exception_ptr> exceptions(files.size());
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i = next++; i < files.size(); i = next++) {
      try {
        const std::string stem = fs::path(files[i]).stem().string();
        parsed[i] = read_annotation(files[i], (image_dir / (stem + ".jpg")).string(), options.check_images);
      } catch (const Error& e) {
        bad[i] = 1;
        errors[i] = e.what();
        exceptions[i] = std::current_exception();
      }
    }
  };
  int threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, std::min<int>(threads, static_cast<int>(files.size() / 256 + 1)));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!bad[i]) {
      const Annotation& a = parsed[i];
      ++out.counts.files;
      out.counts.zero_area += static_cast<std::size_t>(a.zero_area);
      for (const Item& it : a.items) {
        ++out.counts.items;
        if (it.clamped) ++out.counts.clamped;
        if (it.style == 0) {
          ++out.counts.style0;
          if (a.source == "shop") ++out.counts.style0_shop;
        }
      }
      out.annotations.push_back(std::move(parsed[i]));
    } else if (options.skip_bad) {
      ++out.counts.skipped_files;
      out.skipped.push_back(errors[i]);
    } else {
      std::rethrow_exception(exceptions[i]);
    }
  }
  if (out.annotations.empty()) throw bad_input("no readable annotation in the folder").file(annos.string());
  return out;
}

}  // namespace ctok::data
