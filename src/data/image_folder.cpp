#include "ctok/data/image_folder.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <system_error>

#include "ctok/core/error.hpp"

namespace ctok::data {
namespace fs = std::filesystem;

bool has_image_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
}

std::vector<std::string> list_images(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::exists(st)) throw bad_input("image folder does not exist").file(dir);
  if (!fs::is_directory(st)) throw bad_input("not a folder").file(dir).expected("a folder of images");
  std::vector<std::string> images, others;
  fs::directory_iterator it(dir, ec), end;
  if (ec) throw bad_input("cannot read the folder: " + ec.message()).file(dir);
  for (; it != end; it.increment(ec)) {
    if (ec) throw bad_input("cannot read the folder: " + ec.message()).file(dir);
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code ec2;
    const bool regular = fs::is_regular_file(it->path(), ec2);  // follows symlinks
    if (regular && has_image_extension(name)) {
      images.push_back((fs::path(dir) / name).string());
    } else {
      others.push_back(name + (regular ? "" : (fs::is_directory(it->path(), ec2) ? "/" : " (not a regular file)")));
    }
  }
  std::sort(images.begin(), images.end());
  if (images.empty()) {
    std::sort(others.begin(), others.end());
    std::string listing;
    if (others.empty()) {
      listing = "the folder is empty";
    } else {
      listing = std::to_string(others.size()) + " other entr" + (others.size() == 1 ? "y" : "ies") + ": ";
      for (std::size_t i = 0; i < others.size() && i < 20; ++i) listing += (i ? ", " : "") + others[i];
      if (others.size() > 20) listing += ", ...";
    }
    throw bad_input("no image file in the folder").file(dir)
        .expected("*.jpg, *.jpeg, *.png, *.webp or *.bmp").found(listing);
  }
  return images;
}

std::vector<std::string> list_subfolders(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw bad_input("not a folder").file(dir).expected("a folder of concept folders");
  std::vector<std::string> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] != '.' && it->is_directory()) out.push_back(name);
  }
  if (ec) throw bad_input("cannot read the folder: " + ec.message()).file(dir);
  if (out.empty()) throw bad_input("the folder has no sub-folder (one per concept)").file(dir);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace ctok::data
