// Deformable convolution kernels: shared declarations.
#pragma once
#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

namespace dcn {

struct ConvArgs {
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, deformable_groups;
};

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                       const std::optional<at::Tensor>& mask, const ConvArgs& args);

std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, const at::Tensor& offset,
                                     const std::optional<at::Tensor>& mask, bool has_bias,
                                     const ConvArgs& args);

// The instruction set the CPU row kernels run with ("avx512", "avx2" or "default").
std::string cpu_capability();
// Which library computes the CPU kernels' float32 products: "auto" (oneDNN for the output and the
// column gradient, BLAS for the weight gradient), "onednn" (all three) or "blas" (all three; also
// what runs when oneDNN is missing or disabled). Double always uses BLAS.
std::string cpu_gemm();
void set_cpu_gemm(const std::string& name);
// Tuning (benchmarks): column-buffer elements per tile (0: DCN_TILE_ELEMENTS or 2^23) and whether each
// thread runs whole tiles single-threaded (-1: when there are >= 2 tiles per thread, 0: never, 1: always).
void set_cpu_tiling(int64_t tile_elements, int64_t per_thread);

#ifdef WITH_CUDA
at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                        const std::optional<at::Tensor>& mask, const ConvArgs& args);

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& weight, const at::Tensor& offset,
                                      const std::optional<at::Tensor>& mask, bool has_bias,
                                      const ConvArgs& args);
#endif

}  // namespace dcn
