// Private helpers of the model module.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "ctok/core/error.hpp"
#include "ctok/core/safetensors.hpp"

namespace ctok::model::detail {

// The first line of a c10 message (the rest is a backtrace or a TorchScript stack).
std::string first_line(const std::string& message);

// "[1, 16, 24]"
std::string shape_string(at::IntArrayRef shape);

// module.forward(inputs); c10 errors become runtime_failure("<what> failed: ...").
c10::IValue forward(torch::jit::Module& module, std::vector<c10::IValue> inputs, const std::string& what);

// The safetensors tensor as a CPU torch tensor (copied).
torch::Tensor to_torch(const TensorData& t);

}  // namespace ctok::model::detail
