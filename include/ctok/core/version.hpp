#pragma once
namespace ctok {
// "0.1.0+g<git describe>", fixed at configure time.
const char* version_string();
}  // namespace ctok
