// CUDA kernels for deformable convolution (DCNv1 / modulated DCNv2), NCHW layout.
//
// Per image: an im2col-like kernel samples the input into columns (C * taps, pixels), a GEMM per
// group multiplies them with the weight. Backward: column gradient by GEMM, then one kernel
// scatters it into the input gradient (atomic adds) and one computes offset/mask gradients
// (one thread per sampling point, looping over the channels of its deformable group).
#include "dcn.h"

#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

namespace dcn {
namespace {

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
}

struct Shape {
  int64_t channels, height, width, out_w, kernel_w, taps, points, dg_channels;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

template <typename acc_t>
struct Sample {
  int64_t index[4];
  acc_t weight[4];
  acc_t frac_y, frac_x;
  bool valid[4];
};

template <typename acc_t>
__device__ __forceinline__ void locate(const Shape& s, acc_t y, acc_t x, Sample<acc_t>& out) {
  if (!(y >= acc_t(-1) && y < acc_t(s.height) && x >= acc_t(-1) && x < acc_t(s.width))) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out.valid[i] = false;
      out.weight[i] = 0;
      out.index[i] = 0;
    }
    out.frac_y = 0;
    out.frac_x = 0;
    return;
  }
  const acc_t fy = floor(y);
  const acc_t fx = floor(x);
  const int64_t y0 = static_cast<int64_t>(fy);
  const int64_t x0 = static_cast<int64_t>(fx);
  const acc_t ly = y - fy;
  const acc_t lx = x - fx;
  out.frac_y = ly;
  out.frac_x = lx;
  const acc_t weights[4] = {(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t yy = y0 + (i >> 1);
    const int64_t xx = x0 + (i & 1);
    const bool valid = yy >= 0 && yy < s.height && xx >= 0 && xx < s.width;
    out.valid[i] = valid;
    out.index[i] = valid ? yy * s.width + xx : 0;
    out.weight[i] = valid ? weights[i] : acc_t(0);
  }
}

// Sampling position and modulation of tap k of pixel p in deformable group dg.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void position(const Shape& s, const scalar_t* offset,
                                         const scalar_t* mask, int64_t dg, int64_t k, int64_t p,
                                         acc_t& y, acc_t& x, acc_t& m) {
  const int64_t oh = p / s.out_w;
  const int64_t ow = p % s.out_w;
  const int64_t off_channel = (dg * s.taps + k) * 2;
  y = acc_t(oh * s.stride_h - s.pad_h + (k / s.kernel_w) * s.dil_h) +
      static_cast<acc_t>(offset[off_channel * s.points + p]);
  x = acc_t(ow * s.stride_w - s.pad_w + (k % s.kernel_w) * s.dil_w) +
      static_cast<acc_t>(offset[(off_channel + 1) * s.points + p]);
  m = mask ? static_cast<acc_t>(mask[(dg * s.taps + k) * s.points + p]) : acc_t(1);
}

// columns[(c * taps + k), p] = mask * bilinear(input[c], position(k, p)).
template <typename scalar_t>
__global__ void im2col_kernel(Shape s, const scalar_t* input, const scalar_t* offset,
                              const scalar_t* mask, scalar_t* columns, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t p = i % s.points;
    const int64_t c = i / s.points;
    const int64_t dg = c / s.dg_channels;
    const scalar_t* image = input + c * s.height * s.width;
    for (int64_t k = 0; k < s.taps; ++k) {
      acc_t y, x, m;
      position<scalar_t, acc_t>(s, offset, mask, dg, k, p, y, x, m);
      Sample<acc_t> smp;
      locate<acc_t>(s, y, x, smp);
      acc_t value = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (smp.valid[j]) value += smp.weight[j] * static_cast<acc_t>(image[smp.index[j]]);
      }
      columns[(c * s.taps + k) * s.points + p] = static_cast<scalar_t>(m * value);
    }
  }
}

// grad_input[c, corner] += mask * weight(corner) * grad_columns[(c * taps + k), p].
template <typename scalar_t>
__global__ void col2im_kernel(Shape s, const scalar_t* grad_columns, const scalar_t* offset,
                              const scalar_t* mask, scalar_t* grad_input, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t p = i % s.points;
    const int64_t k = (i / s.points) % s.taps;
    const int64_t c = i / (s.points * s.taps);
    const int64_t dg = c / s.dg_channels;
    acc_t y, x, m;
    position<scalar_t, acc_t>(s, offset, mask, dg, k, p, y, x, m);
    Sample<acc_t> smp;
    locate<acc_t>(s, y, x, smp);
    const acc_t g = static_cast<acc_t>(grad_columns[i]) * m;
    scalar_t* image = grad_input + c * s.height * s.width;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (smp.valid[j]) gpuAtomicAdd(image + smp.index[j], static_cast<scalar_t>(g * smp.weight[j]));
    }
  }
}

// One thread per (dg, k, p): offset (dy, dx) and mask gradients.
template <typename scalar_t>
__global__ void coord_grad_kernel(Shape s, const scalar_t* grad_columns, const scalar_t* input,
                                  const scalar_t* offset, const scalar_t* mask,
                                  scalar_t* grad_offset, scalar_t* grad_mask, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t p = i % s.points;
    const int64_t k = (i / s.points) % s.taps;
    const int64_t dg = i / (s.points * s.taps);
    acc_t y, x, m;
    position<scalar_t, acc_t>(s, offset, mask, dg, k, p, y, x, m);
    Sample<acc_t> smp;
    locate<acc_t>(s, y, x, smp);
    acc_t dots[4] = {0, 0, 0, 0};
    if (smp.valid[0] || smp.valid[1] || smp.valid[2] || smp.valid[3]) {
      for (int64_t c = dg * s.dg_channels; c < (dg + 1) * s.dg_channels; ++c) {
        const scalar_t* image = input + c * s.height * s.width;
        const acc_t g = static_cast<acc_t>(grad_columns[(c * s.taps + k) * s.points + p]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (smp.valid[j]) dots[j] += g * static_cast<acc_t>(image[smp.index[j]]);
        }
      }
    }
    const acc_t ly = smp.frac_y, lx = smp.frac_x;
    const acc_t d_y = (1 - lx) * (dots[2] - dots[0]) + lx * (dots[3] - dots[1]);
    const acc_t d_x = (1 - ly) * (dots[1] - dots[0]) + ly * (dots[3] - dots[2]);
    const int64_t off_channel = (dg * s.taps + k) * 2;
    grad_offset[off_channel * s.points + p] = static_cast<scalar_t>(m * d_y);
    grad_offset[(off_channel + 1) * s.points + p] = static_cast<scalar_t>(m * d_x);
    if (grad_mask) {
      const acc_t value = smp.weight[0] * dots[0] + smp.weight[1] * dots[1] +
                          smp.weight[2] * dots[2] + smp.weight[3] * dots[3];
      grad_mask[(dg * s.taps + k) * s.points + p] = static_cast<scalar_t>(value);
    }
  }
}

Shape make_shape(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                 const ConvArgs& a) {
  Shape s;
  s.channels = input.size(1);
  s.height = input.size(2);
  s.width = input.size(3);
  s.kernel_w = weight.size(3);
  s.taps = weight.size(2) * weight.size(3);
  s.out_w = offset.size(3);
  s.points = offset.size(2) * offset.size(3);
  s.dg_channels = s.channels / a.deformable_groups;
  s.stride_h = a.stride_h;
  s.stride_w = a.stride_w;
  s.pad_h = a.pad_h;
  s.pad_w = a.pad_w;
  s.dil_h = a.dil_h;
  s.dil_w = a.dil_w;
  TORCH_CHECK(offset.size(1) == 2 * a.deformable_groups * s.taps,
              "dcn: offset must have 2*deformable_groups*kh*kw channels");
  TORCH_CHECK(s.channels == weight.size(1) * a.groups && s.channels % a.deformable_groups == 0,
              "dcn: channel counts do not match groups/deformable_groups");
  return s;
}

}  // namespace

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                        const std::optional<at::Tensor>& mask, const ConvArgs& args) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Shape s = make_shape(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const int64_t group_rows = s.channels / groups * s.taps;
  const int64_t group_out = out_channels / groups;
  auto output = at::empty({batch, out_channels, offset.size(2), offset.size(3)}, input.options());
  if (batch == 0) return output;
  auto columns = at::empty({s.channels * s.taps, s.points}, input.options());
  const auto weight_matrix = weight.view({groups, group_out, group_rows});
  const int64_t total = s.channels * s.points;
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t n = 0; n < batch; ++n) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcn_im2col", [&] {
      im2col_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          s, input[n].data_ptr<scalar_t>(), offset[n].data_ptr<scalar_t>(),
          mask.has_value() ? (*mask)[n].data_ptr<scalar_t>() : nullptr,
          columns.data_ptr<scalar_t>(), total);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto output_n = output[n].view({out_channels, s.points});
    for (int64_t g = 0; g < groups; ++g) {
      auto out_g = output_n.narrow(0, g * group_out, group_out);
      at::mm_out(out_g, weight_matrix[g], columns.narrow(0, g * group_rows, group_rows));
    }
  }
  if (bias.has_value()) output.add_(bias->view({1, out_channels, 1, 1}));
  return output;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& weight, const at::Tensor& offset,
                                      const std::optional<at::Tensor>& mask, bool has_bias,
                                      const ConvArgs& args) {
  const c10::cuda::CUDAGuard guard(input.device());
  const Shape s = make_shape(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const int64_t group_rows = s.channels / groups * s.taps;
  const int64_t group_out = out_channels / groups;
  auto grad_input = at::zeros_like(input);
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = mask.has_value() ? at::zeros_like(*mask) : at::Tensor();
  // Accumulate the weight gradient in the op-math type (float for half/bfloat16).
  auto grad_weight_acc = at::zeros({groups, group_out, group_rows},
                                   weight.options().dtype(at::toOpMathType(weight.scalar_type())));
  auto columns = at::empty({s.channels * s.taps, s.points}, input.options());
  auto grad_columns = at::empty({s.channels * s.taps, s.points}, input.options());
  const auto weight_matrix = weight.view({groups, group_out, group_rows});
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t im2col_total = s.channels * s.points;
  const int64_t col2im_total = s.channels * s.taps * s.points;
  const int64_t coord_total = args.deformable_groups * s.taps * s.points;
  for (int64_t n = 0; n < batch; ++n) {
    auto grad_output_n = grad_output[n].view({out_channels, s.points});
    for (int64_t g = 0; g < groups; ++g) {
      auto grad_columns_g = grad_columns.narrow(0, g * group_rows, group_rows);
      at::mm_out(grad_columns_g, weight_matrix[g].t(),
                 grad_output_n.narrow(0, g * group_out, group_out));
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcn_backward", [&] {
      const scalar_t* offset_n = offset[n].data_ptr<scalar_t>();
      const scalar_t* mask_n = mask.has_value() ? (*mask)[n].data_ptr<scalar_t>() : nullptr;
      col2im_kernel<scalar_t><<<blocks_for(col2im_total), kThreads, 0, stream>>>(
          s, grad_columns.data_ptr<scalar_t>(), offset_n, mask_n,
          grad_input[n].data_ptr<scalar_t>(), col2im_total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      coord_grad_kernel<scalar_t><<<blocks_for(coord_total), kThreads, 0, stream>>>(
          s, grad_columns.data_ptr<scalar_t>(), input[n].data_ptr<scalar_t>(), offset_n, mask_n,
          grad_offset[n].data_ptr<scalar_t>(),
          mask.has_value() ? grad_mask[n].data_ptr<scalar_t>() : nullptr, coord_total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      im2col_kernel<scalar_t><<<blocks_for(im2col_total), kThreads, 0, stream>>>(
          s, input[n].data_ptr<scalar_t>(), offset_n, mask_n, columns.data_ptr<scalar_t>(),
          im2col_total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    for (int64_t g = 0; g < groups; ++g) {
      auto partial = at::mm(grad_output_n.narrow(0, g * group_out, group_out),
                            columns.narrow(0, g * group_rows, group_rows).t());
      grad_weight_acc[g].add_(partial);
    }
  }
  auto grad_weight = grad_weight_acc.view(weight.sizes()).to(weight.scalar_type());
  auto grad_bias = has_bias ? grad_output.sum({0, 2, 3}) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace dcn
