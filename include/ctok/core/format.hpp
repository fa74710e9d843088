// Number formatting for tables and reports (one copy for every module).
//
//   ctok::fixed(0.12345, 3)   // "0.123"
#pragma once

#include <cstdio>
#include <string>

namespace ctok {

// `v` with `digits` digits after the point ("%.*f").
inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace ctok
