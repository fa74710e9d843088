// Private to the eval module: the --min-identity check shared by the retrieval evaluation
// (eval.cpp) and the classification task (classify.cpp), run before any split is read.
#pragma once

#include <cstdint>
#include <string>

#include "ctok/core/error.hpp"

namespace ctok::eval {

inline void check_min_identity(int64_t min_identity) {
  if (min_identity < 0) {
    throw bad_input("--min-identity must be 0 (off) or a pair_id").key("min_identity")
        .found(std::to_string(min_identity));
  }
}

}  // namespace ctok::eval
