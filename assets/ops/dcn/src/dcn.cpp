// Python bindings and device dispatch.
#include "dcn.h"

namespace {

dcn::ConvArgs make_args(int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        int64_t dil_h, int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  return dcn::ConvArgs{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, deformable_groups};
}

void check_inputs(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                  const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && offset.dim() == 4,
              "dcn: input, weight and offset must be 4-D");
  TORCH_CHECK(input.is_contiguous() && weight.is_contiguous() && offset.is_contiguous(),
              "dcn: input, weight and offset must be contiguous");
  TORCH_CHECK(weight.device() == input.device() && offset.device() == input.device(),
              "dcn: all tensors must be on the same device");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type() &&
                  offset.scalar_type() == input.scalar_type(),
              "dcn: all tensors must have the same dtype");
  if (mask.has_value()) {
    TORCH_CHECK(mask->is_contiguous() && mask->device() == input.device() &&
                    mask->scalar_type() == input.scalar_type(),
                "dcn: mask must be contiguous, on the input's device, with the input's dtype");
  }
}

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                   const std::optional<at::Tensor>& mask, int64_t stride_h, int64_t stride_w,
                   int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
                   int64_t deformable_groups) {
  check_inputs(input, weight, offset, mask);
  auto args = make_args(stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, deformable_groups);
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return dcn::forward_cuda(input, weight, bias, offset, mask, args);
#else
    TORCH_CHECK(false, "dcn: extension built without CUDA support");
#endif
  }
  return dcn::forward_cpu(input, weight, bias, offset, mask, args);
}

std::vector<at::Tensor> backward(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& weight, const at::Tensor& offset,
                                 const std::optional<at::Tensor>& mask, bool has_bias,
                                 int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                 int64_t dil_h, int64_t dil_w, int64_t groups,
                                 int64_t deformable_groups) {
  check_inputs(input, weight, offset, mask);
  TORCH_CHECK(grad_output.is_contiguous(), "dcn: grad_output must be contiguous");
  auto args = make_args(stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, deformable_groups);
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return dcn::backward_cuda(grad_output, input, weight, offset, mask, has_bias, args);
#else
    TORCH_CHECK(false, "dcn: extension built without CUDA support");
#endif
  }
  return dcn::backward_cpu(grad_output, input, weight, offset, mask, has_bias, args);
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Deformable convolution (DCNv1/DCNv2) CPU and CUDA kernels";
  m.def("forward", &forward, "deformable convolution forward");
  m.def("backward", &backward,
        "deformable convolution backward: [grad_input, grad_offset, grad_mask, grad_weight, "
        "grad_bias]");
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
}
