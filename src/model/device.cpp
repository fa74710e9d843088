#include "ctok/model/device.hpp"

#include <torch/cuda.h>

#include "ctok/core/error.hpp"

namespace ctok::model {

DeviceSpec parse_device(const std::string& name) {
  DeviceSpec spec;
  if (name == "cpu") return spec;
  if (name.rfind("cuda", 0) == 0) {
    spec.kind = DeviceKind::kCuda;
    if (name.size() == 4) return spec;
    if (name[4] == ':' && name.size() > 5 && name.size() < 9 &&
        name.find_first_not_of("0123456789", 5) == std::string::npos) {
      spec.index = std::stoi(name.substr(5));
      return spec;
    }
  }
  throw bad_input("unknown device").key("device").expected("cpu, cuda or cuda:N").found(name);
}

std::string device_name(const DeviceSpec& device) {
  if (device.kind == DeviceKind::kCpu) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32" || name == "float32") return Precision::kFp32;
  if (name == "fp16" || name == "float16") return Precision::kFp16;
  if (name == "bf16" || name == "bfloat16") return Precision::kBf16;
  throw bad_input("unknown precision").key("precision").expected("fp32, fp16 or bf16").found(name);
}

std::string precision_name(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return "fp32";
    case Precision::kFp16: return "fp16";
    case Precision::kBf16: return "bf16";
  }
  return "fp32";
}

bool cuda_available() { return torch::cuda::is_available(); }

void check_device(const DeviceSpec& device) {
  if (device.kind == DeviceKind::kCpu) return;
  if (!cuda_available()) {
    throw bad_input("device " + device_name(device) +
                    " requested, but this libtorch build has no CUDA support or no CUDA device is visible; "
                    "use --device cpu")
        .key("device");
  }
  const int count = static_cast<int>(torch::cuda::device_count());
  if (device.index >= count) {
    throw bad_input("CUDA device index out of range")
        .key("device")
        .expected("< " + std::to_string(count))
        .found(std::to_string(device.index));
  }
}

}  // namespace ctok::model
