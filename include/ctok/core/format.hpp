// Number formatting for tables and reports (one copy for every module).
//
//   ctok::fixed(0.12345, 3)         // "0.123"
//   ctok::join({"a", "b"}, ",")       // "a,b"
//   ctok::join_numbers({0, 0.25})     // "0,0.25"
#pragma once

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace ctok {

// `v` with `digits` digits after the point ("%.*f").
inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The items with `sep` between them.
inline std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// Numbers in their shortest stream form ("0.25", "1"), `sep` between them.
inline std::string join_numbers(const std::vector<double>& v, const std::string& sep = ",") {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

}  // namespace ctok
