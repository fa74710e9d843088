// Where GAIR gets its gallery from (team brief, interface 4): a DeepFashion2-layout split
// embedded here, or a gallery store. Replaced by retrieval::GalleryStore when it lands.
#pragma once

#include <string>

#include "ctok/data/deepfashion2.hpp"
#include "ctok/gair/report.hpp"
#include "ctok/model/bundle.hpp"

namespace ctok::gair::detail {

// Every shop crop of the split (the protocol's gallery), embedded with the bundle's image
// encoder; keys: pair_id, style, category_name, source, color, pattern (when present).
Gallery embed_split(const model::Bundle& bundle, const data::Split& split, const std::string& root, int threads, bool quiet);

// A gallery store built by ctok-index / ctok-eval; bad_input when unreadable, half-built or
// embedded by another bundle.
Gallery open_store(const std::string& dir, const model::Bundle& bundle);

}  // namespace ctok::gair::detail
