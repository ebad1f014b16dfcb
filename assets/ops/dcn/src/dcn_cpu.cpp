// CPU kernels for deformable convolution (DCNv1 / modulated DCNv2).
//
// Layout: the input is copied once to channels-last (N, H, W, C) so that a bilinear sample of
// all channels of one deformable group reads four contiguous rows. For each image, group and
// tile of output pixels we build a column buffer (pixels, taps, channels) and multiply it with
// the weight, reordered to (out, taps, channels), in a single GEMM. The backward pass mirrors
// this: one GEMM gives the column gradient, one the weight gradient; offset/mask gradients are
// four dot products per sampling point; the input gradient is scattered by channel blocks so that
// no two threads write the same memory.
#include "dcn.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace dcn {
namespace {

// Hot loops, compiled for several instruction sets and picked at load time (GCC/Clang ifunc).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DCN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DCN_MULTIVERSION
#endif

#define DCN_DEFINE_ROW_KERNELS(T)                                                              \
  DCN_MULTIVERSION void blend_row(T* __restrict dst, const T* __restrict a,                    \
                                  const T* __restrict b, const T* __restrict c,                \
                                  const T* __restrict d, T wa, T wb, T wc, T wd, int64_t n) {  \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                      \
      dst[i] = wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i];                                  \
    }                                                                                          \
  }                                                                                            \
  DCN_MULTIVERSION void axpy_row(T* __restrict dst, const T* __restrict src, T w, int64_t n) { \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) { dst[i] += w * src[i]; }             \
  }                                                                                            \
  DCN_MULTIVERSION void dot4_row(const T* __restrict g, const T* __restrict a,                 \
                                 const T* __restrict b, const T* __restrict c,                 \
                                 const T* __restrict d, int64_t n, T* out) {                   \
    T sa = 0, sb = 0, sc = 0, sd = 0;                                                          \
    _Pragma("omp simd reduction(+ : sa, sb, sc, sd)") for (int64_t i = 0; i < n; ++i) {       \
      sa += g[i] * a[i];                                                                       \
      sb += g[i] * b[i];                                                                       \
      sc += g[i] * c[i];                                                                       \
      sd += g[i] * d[i];                                                                       \
    }                                                                                          \
    out[0] = sa;                                                                               \
    out[1] = sb;                                                                               \
    out[2] = sc;                                                                               \
    out[3] = sd;                                                                               \
  }

DCN_DEFINE_ROW_KERNELS(float)
DCN_DEFINE_ROW_KERNELS(double)

struct Geometry {
  int64_t channels, height, width, out_h, out_w, kernel_h, kernel_w, taps, points;
  int64_t deformable_groups, dg_channels;
  ConvArgs args;
};

// The four corner rows of one bilinear sample. Corners outside the image point to a row of
// zeros and have weight 0, so that they contribute nothing (and no NaN from 0 * garbage).
template <typename T>
struct Corners {
  const T* row[4];
  T weight[4];
  T frac_y, frac_x;
  bool valid[4];
};

template <typename T>
inline void locate(const T* image, const T* zero_row, const Geometry& geo, T y, T x,
                   Corners<T>& c) {
  // No corner is inside unless -1 <= y < H and -1 <= x < W (also rejects NaN).
  if (!(y >= T(-1) && y < T(geo.height) && x >= T(-1) && x < T(geo.width))) {
    for (int i = 0; i < 4; ++i) {
      c.row[i] = zero_row;
      c.weight[i] = 0;
      c.valid[i] = false;
    }
    c.frac_y = 0;
    c.frac_x = 0;
    return;
  }
  const T floor_y = std::floor(y);
  const T floor_x = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(floor_y);
  const int64_t x0 = static_cast<int64_t>(floor_x);
  const T ly = y - floor_y;
  const T lx = x - floor_x;
  c.frac_y = ly;
  c.frac_x = lx;
  const T weights[4] = {(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx};
  for (int i = 0; i < 4; ++i) {
    const int64_t yy = y0 + (i >> 1);
    const int64_t xx = x0 + (i & 1);
    const bool valid = yy >= 0 && yy < geo.height && xx >= 0 && xx < geo.width;
    c.valid[i] = valid;
    c.row[i] = valid ? image + (yy * geo.width + xx) * geo.channels : zero_row;
    c.weight[i] = valid ? weights[i] : T(0);
  }
}

// Calls fn(tap, dg, c_begin, c_end, y, x, modulation) for every sampling point of pixel p whose
// deformable group overlaps channels [c_lo, c_hi).
template <typename T, typename Fn>
inline void for_each_sample(const Geometry& geo, const T* offset, const T* mask, int64_t p,
                            int64_t c_lo, int64_t c_hi, Fn&& fn) {
  const auto& a = geo.args;
  const int64_t oh = p / geo.out_w;
  const int64_t ow = p % geo.out_w;
  const int64_t dg_first = c_lo / geo.dg_channels;
  const int64_t dg_last = (c_hi - 1) / geo.dg_channels;
  for (int64_t k = 0; k < geo.taps; ++k) {
    const T base_y = T(oh * a.stride_h - a.pad_h + (k / geo.kernel_w) * a.dil_h);
    const T base_x = T(ow * a.stride_w - a.pad_w + (k % geo.kernel_w) * a.dil_w);
    for (int64_t dg = dg_first; dg <= dg_last; ++dg) {
      const int64_t c_begin = std::max(c_lo, dg * geo.dg_channels);
      const int64_t c_end = std::min(c_hi, (dg + 1) * geo.dg_channels);
      const int64_t off_channel = (dg * geo.taps + k) * 2;
      const T y = base_y + offset[off_channel * geo.points + p];
      const T x = base_x + offset[(off_channel + 1) * geo.points + p];
      const T m = mask ? mask[(dg * geo.taps + k) * geo.points + p] : T(1);
      fn(k, dg, c_begin, c_end, y, x, m);
    }
  }
}

// columns[(p - p0), k, c - c_lo] = mask * bilinear(image, p, k)[c] for p in [p0, p1).
template <typename T>
void fill_columns(const T* image, const T* zero_row, const T* offset, const T* mask,
                  const Geometry& geo, int64_t c_lo, int64_t c_hi, int64_t p0, int64_t p1,
                  T* columns) {
  const int64_t width = c_hi - c_lo;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, geo.taps * width));
  at::parallel_for(p0, p1, grain, [&](int64_t begin, int64_t end) {
    Corners<T> c;
    for (int64_t p = begin; p < end; ++p) {
      T* pixel_columns = columns + (p - p0) * geo.taps * width;
      for_each_sample<T>(geo, offset, mask, p, c_lo, c_hi,
                         [&](int64_t k, int64_t, int64_t cb, int64_t ce, T y, T x, T m) {
                           locate(image, zero_row, geo, y, x, c);
                           blend_row(pixel_columns + k * width + (cb - c_lo), c.row[0] + cb,
                                     c.row[1] + cb, c.row[2] + cb, c.row[3] + cb,
                                     m * c.weight[0], m * c.weight[1], m * c.weight[2],
                                     m * c.weight[3], ce - cb);
                         });
    }
  });
}

// Offset and mask gradients from the column gradient (accumulated: groups share samples).
template <typename T>
void offset_mask_grad(const T* image, const T* zero_row, const T* offset, const T* mask,
                      const Geometry& geo, int64_t c_lo, int64_t c_hi, int64_t p0, int64_t p1,
                      const T* grad_columns, T* grad_offset, T* grad_mask) {
  const int64_t width = c_hi - c_lo;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, geo.taps * width));
  at::parallel_for(p0, p1, grain, [&](int64_t begin, int64_t end) {
    Corners<T> c;
    T dots[4];
    for (int64_t p = begin; p < end; ++p) {
      const T* pixel_grad = grad_columns + (p - p0) * geo.taps * width;
      for_each_sample<T>(
          geo, offset, mask, p, c_lo, c_hi,
          [&](int64_t k, int64_t dg, int64_t cb, int64_t ce, T y, T x, T m) {
            locate(image, zero_row, geo, y, x, c);
            if (!(c.valid[0] || c.valid[1] || c.valid[2] || c.valid[3])) return;
            dot4_row(pixel_grad + k * width + (cb - c_lo), c.row[0] + cb, c.row[1] + cb,
                     c.row[2] + cb, c.row[3] + cb, ce - cb, dots);
            const T ly = c.frac_y, lx = c.frac_x;
            const T d_y = (1 - lx) * (dots[2] - dots[0]) + lx * (dots[3] - dots[1]);
            const T d_x = (1 - ly) * (dots[1] - dots[0]) + ly * (dots[3] - dots[2]);
            const int64_t off_channel = (dg * geo.taps + k) * 2;
            grad_offset[off_channel * geo.points + p] += m * d_y;
            grad_offset[(off_channel + 1) * geo.points + p] += m * d_x;
            if (grad_mask) {
              const T value = c.weight[0] * dots[0] + c.weight[1] * dots[1] +
                              c.weight[2] * dots[2] + c.weight[3] * dots[3];
              grad_mask[(dg * geo.taps + k) * geo.points + p] += value;
            }
          });
    }
  });
}

// Scatter the column gradient into the channels-last input gradient. Threads own disjoint
// channel blocks, so the read-modify-writes never race.
template <typename T>
void input_grad(const T* zero_row, const T* offset, const T* mask, const Geometry& geo,
                int64_t c_lo, int64_t c_hi, int64_t p0, int64_t p1, const T* grad_columns,
                T* grad_image) {
  const int64_t width = c_hi - c_lo;
  const int64_t block = 16;
  const int64_t blocks = (width + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t b_lo = c_lo + begin * block;
    const int64_t b_hi = std::min(c_hi, c_lo + end * block);
    Corners<T> c;
    for (int64_t p = p0; p < p1; ++p) {
      const T* pixel_grad = grad_columns + (p - p0) * geo.taps * width;
      for_each_sample<T>(geo, offset, mask, p, b_lo, b_hi,
                         [&](int64_t k, int64_t, int64_t cb, int64_t ce, T y, T x, T m) {
                           locate(static_cast<const T*>(grad_image), zero_row, geo, y, x, c);
                           const T* src = pixel_grad + k * width + (cb - c_lo);
                           for (int i = 0; i < 4; ++i) {
                             if (!c.valid[i]) continue;
                             axpy_row(const_cast<T*>(c.row[i]) + cb, src, m * c.weight[i],
                                      ce - cb);
                           }
                         });
    }
  });
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                       const ConvArgs& args) {
  Geometry geo;
  geo.channels = input.size(1);
  geo.height = input.size(2);
  geo.width = input.size(3);
  geo.kernel_h = weight.size(2);
  geo.kernel_w = weight.size(3);
  geo.taps = geo.kernel_h * geo.kernel_w;
  geo.out_h = offset.size(2);
  geo.out_w = offset.size(3);
  geo.points = geo.out_h * geo.out_w;
  geo.deformable_groups = args.deformable_groups;
  geo.dg_channels = geo.channels / args.deformable_groups;
  geo.args = args;
  const int64_t expect_h = (geo.height + 2 * args.pad_h - (args.dil_h * (geo.kernel_h - 1) + 1)) /
                               args.stride_h + 1;
  const int64_t expect_w = (geo.width + 2 * args.pad_w - (args.dil_w * (geo.kernel_w - 1) + 1)) /
                               args.stride_w + 1;
  TORCH_CHECK(geo.out_h == expect_h && geo.out_w == expect_w, "dcn: offset has spatial size ",
              geo.out_h, "x", geo.out_w, ", expected ", expect_h, "x", expect_w);
  TORCH_CHECK(offset.size(1) == 2 * args.deformable_groups * geo.taps,
              "dcn: offset must have 2*deformable_groups*kh*kw channels");
  TORCH_CHECK(geo.channels == weight.size(1) * args.groups && geo.channels % args.groups == 0 &&
                  geo.channels % args.deformable_groups == 0,
              "dcn: channel counts do not match groups/deformable_groups");
  return geo;
}

// Pixels per tile: keeps the column buffer of one tile around a few MB (cache friendly),
// but tiles stay large enough for an efficient GEMM.
int64_t tile_budget() {
  static const int64_t budget = [] {
    const char* env = std::getenv("DCN_TILE_ELEMENTS");
    return env ? std::max<int64_t>(1, std::atoll(env)) : (int64_t(1) << 20);
  }();
  return budget;
}

int64_t tile_pixels(const Geometry& geo, int64_t group_channels) {
  const int64_t per_pixel = std::max<int64_t>(1, geo.taps * group_channels);
  const int64_t tile = std::max<int64_t>(256, tile_budget() / per_pixel);
  return std::min(tile, geo.points);
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                       const std::optional<at::Tensor>& mask, const ConvArgs& args) {
  const Geometry geo = make_geometry(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const int64_t group_in = geo.channels / groups;
  const int64_t group_out = out_channels / groups;
  auto output = at::empty({batch, out_channels, geo.out_h, geo.out_w}, input.options());
  if (batch == 0) return output;
  const auto image = input.permute({0, 2, 3, 1}).contiguous();
  // (groups, out/groups, taps * in/groups), taps-major to match the column buffer.
  const auto weight_matrix =
      weight.permute({0, 2, 3, 1}).contiguous().view({groups, group_out, geo.taps * group_in});
  const int64_t tile = tile_pixels(geo, group_in);
  auto columns = at::empty({tile, geo.taps * group_in}, input.options());
  auto output_rows = at::empty({tile, group_out}, input.options());
  auto zero_row = at::zeros({geo.channels}, input.options());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_forward_cpu", [&] {
    const scalar_t* zero = zero_row.data_ptr<scalar_t>();
    for (int64_t n = 0; n < batch; ++n) {
      const scalar_t* image_n = image.data_ptr<scalar_t>() + n * geo.height * geo.width * geo.channels;
      const scalar_t* offset_n = offset.data_ptr<scalar_t>() + n * offset.stride(0);
      const scalar_t* mask_n = mask.has_value() ? mask->data_ptr<scalar_t>() + n * mask->stride(0) : nullptr;
      auto output_n = output[n].view({out_channels, geo.points});
      for (int64_t g = 0; g < groups; ++g) {
        auto output_g = output_n.narrow(0, g * group_out, group_out);
        const auto weight_t = weight_matrix[g].t();
        // One tile: fill its columns, (pixels, out) = columns x weight^T (faster in MKL than the
        // transposed product), then a small transposed copy into the NCHW output.
        auto run_tile = [&](int64_t p0, at::Tensor& cols_buffer, at::Tensor& rows_buffer) {
          const int64_t p1 = std::min(geo.points, p0 + tile);
          auto cols = cols_buffer.narrow(0, 0, p1 - p0);
          auto out_rows = rows_buffer.narrow(0, 0, p1 - p0);
          fill_columns<scalar_t>(image_n, zero, offset_n, mask_n, geo, g * group_in,
                                 (g + 1) * group_in, p0, p1, cols.data_ptr<scalar_t>());
          at::mm_out(out_rows, cols, weight_t);
          output_g.narrow(1, p0, p1 - p0).copy_(out_rows.t());
        };
        const int64_t tiles = (geo.points + tile - 1) / tile;
        if (tiles >= 2 * at::get_num_threads()) {
          // Enough tiles: each thread runs whole tiles (single-threaded fill and GEMM), so there
          // is one parallel region per image instead of several per tile; this matters a lot
          // when the cores are shared with other processes.
          at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
            auto cols_buffer = at::empty({tile, geo.taps * group_in}, input.options());
            auto rows_buffer = at::empty({tile, group_out}, input.options());
            for (int64_t t = t0; t < t1; ++t) run_tile(t * tile, cols_buffer, rows_buffer);
          });
        } else {
          for (int64_t t = 0; t < tiles; ++t) run_tile(t * tile, columns, output_rows);
        }
      }
    }
  });
  if (bias.has_value()) output.add_(bias->view({1, out_channels, 1, 1}));
  return output;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, const at::Tensor& offset,
                                     const std::optional<at::Tensor>& mask, bool has_bias,
                                     const ConvArgs& args) {
  const Geometry geo = make_geometry(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const int64_t group_in = geo.channels / groups;
  const int64_t group_out = out_channels / groups;
  const auto image = input.permute({0, 2, 3, 1}).contiguous();
  const auto weight_matrix =
      weight.permute({0, 2, 3, 1}).contiguous().view({groups, group_out, geo.taps * group_in});
  auto grad_image = at::zeros_like(image);
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = mask.has_value() ? at::zeros_like(*mask) : at::Tensor();
  auto grad_weight_matrix = at::zeros_like(weight_matrix);
  const int64_t tile = tile_pixels(geo, group_in);
  auto columns = at::empty({tile, geo.taps * group_in}, input.options());
  auto grad_columns = at::empty({tile, geo.taps * group_in}, input.options());
  auto zero_row = at::zeros({geo.channels}, input.options());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_backward_cpu", [&] {
    const scalar_t* zero = zero_row.data_ptr<scalar_t>();
    const int64_t image_size = geo.height * geo.width * geo.channels;
    for (int64_t n = 0; n < batch; ++n) {
      const scalar_t* image_n = image.data_ptr<scalar_t>() + n * image_size;
      scalar_t* grad_image_n = grad_image.data_ptr<scalar_t>() + n * image_size;
      const scalar_t* offset_n = offset.data_ptr<scalar_t>() + n * offset.stride(0);
      scalar_t* grad_offset_n = grad_offset.data_ptr<scalar_t>() + n * offset.stride(0);
      const scalar_t* mask_n = mask.has_value() ? mask->data_ptr<scalar_t>() + n * mask->stride(0) : nullptr;
      scalar_t* grad_mask_n = mask.has_value() ? grad_mask.data_ptr<scalar_t>() + n * mask->stride(0) : nullptr;
      auto grad_output_n = grad_output[n].view({out_channels, geo.points});
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c_lo = g * group_in;
        const int64_t c_hi = c_lo + group_in;
        auto grad_output_g = grad_output_n.narrow(0, g * group_out, group_out);
        auto grad_weight_g = grad_weight_matrix[g];
        for (int64_t p0 = 0; p0 < geo.points; p0 += tile) {
          const int64_t p1 = std::min(geo.points, p0 + tile);
          auto cols = columns.narrow(0, 0, p1 - p0);
          auto grad_cols = grad_columns.narrow(0, 0, p1 - p0);
          auto grad_out_tile = grad_output_g.narrow(1, p0, p1 - p0);
          fill_columns<scalar_t>(image_n, zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1,
                                 cols.data_ptr<scalar_t>());
          grad_weight_g.addmm_(grad_out_tile, cols);
          at::mm_out(grad_cols, grad_out_tile.t(), weight_matrix[g]);
          const scalar_t* gc = grad_cols.data_ptr<scalar_t>();
          offset_mask_grad<scalar_t>(image_n, zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1, gc,
                                     grad_offset_n, grad_mask_n);
          input_grad<scalar_t>(zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1, gc, grad_image_n);
        }
      }
    }
  });
  auto grad_input = grad_image.permute({0, 3, 1, 2}).contiguous();
  auto grad_weight = grad_weight_matrix.view({out_channels, geo.kernel_h, geo.kernel_w, group_in})
                         .permute({0, 3, 1, 2})
                         .contiguous();
  auto grad_bias = has_bias ? grad_output.sum({0, 2, 3}) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace dcn
