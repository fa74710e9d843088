// The diffusion side's named choices (noise schedule, prediction, sampler, timestep
// spacing) and their one string table, without libtorch: the manifest, the option
// structs, the tools' help texts and the JSON records all read it.
//
//   Sampler s = ctok::model::parse_enum<Sampler>("euler");  // bad_input "unknown sampler"
//   ctok::model::enum_name(s);                               // "euler"
//   ctok::model::enum_choices<Sampler>();                    // "ddim | euler"
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "ctok/core/error.hpp"

namespace ctok::model {

enum class BetaSchedule { kLinear, kScaledLinear, kSquaredCosCapV2 };
enum class Prediction { kEpsilon, kVPrediction };
enum class Sampler { kDdim, kEuler };
enum class Spacing { kTrailing, kLeading };

// One table per enum: its names in the order of its values, the key it is configured by,
// and what the error message calls it.
template <typename E>
struct EnumTable;
template <>
struct EnumTable<BetaSchedule> {
  static constexpr const char* key = "beta_schedule";
  static constexpr const char* what = "beta schedule";
  static constexpr std::array<const char*, 3> names{"linear", "scaled_linear", "squaredcos_cap_v2"};
};
template <>
struct EnumTable<Prediction> {
  static constexpr const char* key = "prediction";
  static constexpr const char* what = "prediction type";
  static constexpr std::array<const char*, 2> names{"epsilon", "v_prediction"};
};
template <>
struct EnumTable<Sampler> {
  static constexpr const char* key = "sampler";
  static constexpr const char* what = "sampler";
  static constexpr std::array<const char*, 2> names{"ddim", "euler"};
};
template <>
struct EnumTable<Spacing> {
  static constexpr const char* key = "spacing";
  static constexpr const char* what = "timestep spacing";
  static constexpr std::array<const char*, 2> names{"trailing", "leading"};
};

template <typename E>
std::string enum_name(E value) {
  return EnumTable<E>::names.at(static_cast<size_t>(value));
}

template <typename E>
std::vector<std::string> enum_names() {
  return {EnumTable<E>::names.begin(), EnumTable<E>::names.end()};
}

// "ddim | euler"
template <typename E>
std::string enum_choices() {
  std::string out;
  for (const char* n : EnumTable<E>::names) out += (out.empty() ? "" : " | ") + std::string(n);
  return out;
}

// bad_input "unknown <what>" keyed by the enum's key, listing the choices.
template <typename E>
E parse_enum(const std::string& name) {
  const auto& names = EnumTable<E>::names;
  for (size_t i = 0; i < names.size(); ++i) {
    if (name == names[i]) return static_cast<E>(i);
  }
  throw bad_input(std::string("unknown ") + EnumTable<E>::what).key(EnumTable<E>::key).expected(enum_choices<E>()).found(name);
}

}  // namespace ctok::model
