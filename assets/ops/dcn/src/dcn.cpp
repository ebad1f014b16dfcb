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
  TORCH_CHECK((input.is_contiguous() ||
               (input.is_cpu() && input.is_contiguous(at::MemoryFormat::ChannelsLast))) &&
                  weight.is_contiguous() && offset.is_contiguous(),
              "dcn: input (contiguous, or channels-last on the CPU), weight and offset must be "
              "contiguous");
  TORCH_CHECK(weight.device() == input.device() && offset.device() == input.device(),
              "dcn: all tensors must be on the same device");
  // On the CPU a bfloat16 input comes with float32 offset and mask (sampling positions need the
  // precision); otherwise every tensor has the input's dtype.
  const auto position_type = input.is_cpu() && input.scalar_type() == at::kBFloat16
                                 ? at::kFloat
                                 : input.scalar_type();
  TORCH_CHECK(weight.scalar_type() == input.scalar_type() && offset.scalar_type() == position_type,
              "dcn: all tensors must have the same dtype (on the CPU, a bfloat16 input takes "
              "float32 offset and mask)");
  if (mask.has_value()) {
    TORCH_CHECK(mask->is_contiguous() && mask->device() == input.device() &&
                    mask->scalar_type() == position_type,
                "dcn: mask must be contiguous, on the input's device, with the offset's dtype");
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
  TORCH_CHECK(grad_output.is_contiguous() ||
                  (grad_output.is_cpu() &&
                   grad_output.is_contiguous(at::MemoryFormat::ChannelsLast)),
              "dcn: grad_output must be contiguous (or channels-last on the CPU)");
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
  m.def("cpu_capability", &dcn::cpu_capability,
        "instruction set of the CPU row kernels: avx512, avx2 or default (DCN_CPU_CAPABILITY, "
        "else ATEN_CPU_CAPABILITY, else the best the CPU supports)");
  m.def("cpu_gemm", &dcn::cpu_gemm,
        "library of the CPU products: auto (oneDNN for the output and column gradient, BLAS for "
        "the weight gradient), onednn or blas");
  m.def("set_cpu_gemm", &dcn::set_cpu_gemm, "select the CPU products: 'auto', 'onednn' or 'blas'");
  m.def("set_cpu_tiling", &dcn::set_cpu_tiling,
        "CPU tuning: column-buffer elements per tile (0: default) and per-thread tiles (-1 auto, 0, 1)");
}
