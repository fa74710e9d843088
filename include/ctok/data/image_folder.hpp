// A folder of images given on the command line (the concept images of ctok-learn, the
// negatives): the image files it holds, in a stable order.
//
//   std::vector<std::string> files = ctok::data::list_images("photos/");   // sorted paths
//
// Not recursive; hidden files (".name") are ignored. Errors are bad_input naming the folder
// and, when it holds no image, the files it does hold.
#pragma once

#include <string>
#include <vector>

namespace ctok::data {

// Extensions read as images (case-insensitive): jpg, jpeg, png, webp, bmp.
bool has_image_extension(const std::string& path);

// Sorted (byte order) paths "<dir>/<name>" of the image files in `dir`. bad_input when
// `dir` is missing, not a folder or unreadable, or holds no image file (the message lists
// up to 20 of the names found there).
std::vector<std::string> list_images(const std::string& dir);

// Sorted names (not paths) of the sub-folders of `dir`, hidden ones ignored. bad_input when
// `dir` is missing or has no sub-folder.
std::vector<std::string> list_subfolders(const std::string& dir);

}  // namespace ctok::data
