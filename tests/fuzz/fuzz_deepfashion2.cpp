// The DeepFashion2 / FashionWorld annotation reader on arbitrary bytes. What it accepts
// satisfies the documented ranges (include/ctok/data/deepfashion2.hpp).
#include "ctok/data/deepfashion2.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ctok::data::Annotation a;
  if (!ctok_fuzz::run_guarded([&] { a = ctok::data::parse_annotation(text, "annos/000001.json"); })) return 0;
  CTOK_FUZZ_CHECK(a.source == "shop" || a.source == "user", "source");
  CTOK_FUZZ_CHECK(a.pair_id >= 0, "pair_id");
  CTOK_FUZZ_CHECK(!a.items.empty() || a.zero_area > 0, "no items");
  for (size_t i = 0; i < a.items.size(); ++i) {
    const ctok::data::Item& it = a.items[i];
    CTOK_FUZZ_CHECK(i == 0 || std::stoi(a.items[i - 1].name.substr(4)) < std::stoi(it.name.substr(4)), "items out of order");
    CTOK_FUZZ_CHECK(it.category_id >= 1 && !it.category_name.empty(), "category");
    CTOK_FUZZ_CHECK(it.style >= 0, "style");
    const auto& b = it.box;
    CTOK_FUZZ_CHECK(b.x1 >= 0 && b.y1 >= 0 && b.x1 < b.x2 && b.y1 < b.y2, "box order");
    CTOK_FUZZ_CHECK(b.x2 <= ctok::data::kMaxCoordinate && b.y2 <= ctok::data::kMaxCoordinate, "box range");
  }
  return 0;
}
