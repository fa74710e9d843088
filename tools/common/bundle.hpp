// The tools' one way to load the bundle of --bundle/--device (private to tools/): the image
// encoder always, the diffusion models when asked, sha256 checked unless --no-verify.
// Apart from tool.hpp so that tools which never load a model stay free of libtorch headers.
#pragma once

#include "tool.hpp"
#include "ctok/model/bundle.hpp"

namespace ctok::tool {

inline model::Bundle load_bundle(const CommonOptions& common, bool verify_sha256, bool diffusion = false) {
  model::BundleOptions bo;
  bo.dir = common.bundle_dir();
  bo.device = model::parse_device(common.device);
  model::check_device(bo.device);
  bo.verify_sha256 = verify_sha256;
  bo.load_image = true;
  bo.load_diffusion = diffusion;
  return model::Bundle::load(bo);
}

}  // namespace ctok::tool
