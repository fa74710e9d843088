// Devices and precisions, as strings and enums; no libtorch in this header so tools and
// option structs can name them cheaply.
//
//   ctok::model::DeviceSpec d = ctok::model::parse_device("cuda:1");  // bad_input if unknown
//   ctok::model::check_device(d);   // bad_input if this libtorch build has no CUDA
//   ctok::model::Precision p = ctok::model::parse_precision("bf16");
#pragma once

#include <string>

namespace ctok::model {

enum class DeviceKind { kCpu, kCuda };
enum class Precision { kFp32, kFp16, kBf16 };

struct DeviceSpec {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // CUDA device ordinal
};

DeviceSpec parse_device(const std::string& name);  // "cpu" | "cuda" | "cuda:N"
std::string device_name(const DeviceSpec& device);  // "cpu", "cuda:0"
Precision parse_precision(const std::string& name);  // "fp32" | "fp16" | "bf16"
std::string precision_name(Precision precision);

// True when this libtorch build can run on CUDA and a device is visible.
bool cuda_available();
// Throws bad_input naming the device when this build or machine cannot use it.
void check_device(const DeviceSpec& device);

}  // namespace ctok::model
