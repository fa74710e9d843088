// The tiny fixture bundle (tests/data/tiny_bundle) with its diffusion models, loaded once
// per test program (include as "unit/tiny_bundle.hpp").
#pragma once

#include <string>

#include "ctok/model/bundle.hpp"

namespace ctok::test {

inline const model::Bundle& tiny_bundle() {
  static const model::Bundle b = [] {
    model::BundleOptions o;
    o.dir = std::string(CTOK_TEST_DATA) + "/tiny_bundle";
    o.load_diffusion = true;
    return model::Bundle::load(o);
  }();
  return b;
}

}  // namespace ctok::test
