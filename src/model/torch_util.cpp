#include "torch_util.hpp"

#include <cstring>

namespace ctok::model::detail {

std::string first_line(const std::string& message) {
  auto end = message.find('\n');
  std::string line = message.substr(0, end);
  // c10 appends " (most recent call first):" or "Exception raised from ..." on later lines.
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

std::string shape_string(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

c10::IValue forward(torch::jit::Module& module, std::vector<c10::IValue> inputs, const std::string& what) {
  try {
    return module.forward(std::move(inputs));
  } catch (const c10::Error& e) {
    // The message of a TorchScript error starts with the stack; keep the error line.
    std::string msg = e.what_without_backtrace();
    auto pos = msg.rfind("RuntimeError: ");
    if (pos != std::string::npos) msg = msg.substr(pos + 14);
    throw runtime_failure(what + " failed: " + first_line(msg));
  } catch (const std::runtime_error& e) {  // torch::jit::JITException and friends
    std::string msg = e.what();
    auto pos = msg.rfind("RuntimeError: ");
    if (pos != std::string::npos) msg = msg.substr(pos + 14);
    throw runtime_failure(what + " failed: " + first_line(msg));
  }
}

torch::Tensor to_torch(const TensorData& t) {
  torch::ScalarType st;
  switch (t.dtype) {
    case DType::kF64: st = torch::kFloat64; break;
    case DType::kF32: st = torch::kFloat32; break;
    case DType::kF16: st = torch::kFloat16; break;
    case DType::kBF16: st = torch::kBFloat16; break;
    case DType::kI64: st = torch::kInt64; break;
    case DType::kI32: st = torch::kInt32; break;
    case DType::kI16: st = torch::kInt16; break;
    case DType::kI8: st = torch::kInt8; break;
    case DType::kU8: st = torch::kUInt8; break;
    case DType::kBool: st = torch::kBool; break;
    default: throw runtime_failure("unsupported safetensors dtype");
  }
  auto out = torch::empty(t.shape, torch::TensorOptions().dtype(st));
  if (!t.bytes.empty()) std::memcpy(out.data_ptr(), t.bytes.data(), t.bytes.size());
  return out;
}

}  // namespace ctok::model::detail
