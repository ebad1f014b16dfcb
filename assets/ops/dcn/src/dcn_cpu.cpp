// CPU kernels for deformable convolution (DCNv1 / modulated DCNv2).
//
// Layout: the input is read channels-last (N, H, W, C) -- a copy for an NCHW input, none for a
// channels-last one -- so that a bilinear sample of all channels of one deformable group reads
// four contiguous rows. For each image, group and tile of output pixels we build a column buffer
// (pixels, taps, channels) and multiply it with the weight, reordered to (out, taps, channels).
// That product is handed to oneDNN as a 1x1 convolution over a channels-last view of the column
// buffer: on AMD CPUs with AVX-512, MKL's GEMM (at::mm) ran at about half oneDNN's speed (issue
// 16), and oneDNN is what F.conv2d itself uses, so the two are compared on equal terms. Which
// library computes which product is selectable (DCN_CPU_GEMM, set_cpu_gemm) for comparison. The
// backward pass mirrors the forward: one product gives the column gradient, one the weight
// gradient; offset/mask gradients are four dot products per sampling point; the input gradient is
// scattered by channel blocks so that no two threads write the same memory.
//
// The row kernels (bilinear blend, axpy, four dot products) are compiled for AVX-512, AVX2 and
// plain x86-64 and picked once: DCN_CPU_CAPABILITY, else ATEN_CPU_CAPABILITY (the variable torch
// itself obeys; values default/avx2/avx512), else the best the CPU supports. A benchmark can thus
// force a lower instruction set for torch and for these kernels alike.
#include "dcn.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/ops/mkldnn_convolution.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

namespace dcn {
namespace {

#if defined(__GNUC__)
#define DCN_ALWAYS_INLINE inline __attribute__((always_inline))
#define DCN_PREFETCH(address) __builtin_prefetch(address)
#else
#define DCN_ALWAYS_INLINE inline
#define DCN_PREFETCH(address) ((void)(address))
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define DCN_X86_DISPATCH 1
#define DCN_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DCN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define DCN_X86_DISPATCH 0
#define DCN_TARGET_AVX512
#define DCN_TARGET_AVX2
#endif

#define DCN_DEFINE_ROW_KERNELS(T, TARGET)                                                      \
  TARGET void blend_row(T* __restrict dst, const T* __restrict a, const T* __restrict b,       \
                        const T* __restrict c, const T* __restrict d, T wa, T wb, T wc, T wd,  \
                        int64_t n) {                                                           \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                      \
      dst[i] = wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i];                                  \
    }                                                                                          \
  }                                                                                            \
  TARGET void axpy_row(T* __restrict dst, const T* __restrict src, T w, int64_t n) {           \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) { dst[i] += w * src[i]; }             \
  }                                                                                            \
  TARGET void dot4_row(const T* __restrict g, const T* __restrict a, const T* __restrict b,    \
                       const T* __restrict c, const T* __restrict d, int64_t n, T* out) {      \
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

// bfloat16 rows, float arithmetic: the conversions are bit operations, so the loop vectorises.
// Rounding to nearest even; NaN stays NaN.
#define DCN_DEFINE_BF16_BLEND(TARGET)                                                          \
  TARGET void blend_row(c10::BFloat16* __restrict dst_, const c10::BFloat16* __restrict a_,     \
                        const c10::BFloat16* __restrict b_, const c10::BFloat16* __restrict c_, \
                        const c10::BFloat16* __restrict d_, float wa, float wb, float wc,       \
                        float wd, int64_t n) {                                                 \
    uint16_t* __restrict dst = reinterpret_cast<uint16_t*>(dst_);                              \
    const uint16_t* __restrict a = reinterpret_cast<const uint16_t*>(a_);                      \
    const uint16_t* __restrict b = reinterpret_cast<const uint16_t*>(b_);                      \
    const uint16_t* __restrict c = reinterpret_cast<const uint16_t*>(c_);                      \
    const uint16_t* __restrict d = reinterpret_cast<const uint16_t*>(d_);                      \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                      \
      const float r = wa * bf16_bits_to_float(a[i]) + wb * bf16_bits_to_float(b[i]) +          \
                      wc * bf16_bits_to_float(c[i]) + wd * bf16_bits_to_float(d[i]);            \
      dst[i] = float_to_bf16_bits(r);                                                          \
    }                                                                                          \
  }

DCN_ALWAYS_INLINE float bf16_bits_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

DCN_ALWAYS_INLINE uint16_t float_to_bf16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return value != value ? uint16_t(0x7FC0) : static_cast<uint16_t>(rounded);
}

namespace isa_default {
DCN_DEFINE_BF16_BLEND()
DCN_DEFINE_ROW_KERNELS(float, )
DCN_DEFINE_ROW_KERNELS(double, )
}  // namespace isa_default
#if DCN_X86_DISPATCH
namespace isa_avx2 {
DCN_DEFINE_BF16_BLEND(DCN_TARGET_AVX2)
DCN_DEFINE_ROW_KERNELS(float, DCN_TARGET_AVX2)
DCN_DEFINE_ROW_KERNELS(double, DCN_TARGET_AVX2)
}  // namespace isa_avx2
namespace isa_avx512 {
DCN_DEFINE_BF16_BLEND(DCN_TARGET_AVX512)
DCN_DEFINE_ROW_KERNELS(float, DCN_TARGET_AVX512)
DCN_DEFINE_ROW_KERNELS(double, DCN_TARGET_AVX512)
}  // namespace isa_avx512
#endif

enum class Isa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

Isa best_supported_isa() {
#if DCN_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kDefault;
}

// The requested instruction set, capped at what the CPU supports.
Isa chosen_isa() {
  static const Isa isa = [] {
    const Isa best = best_supported_isa();
    const char* env = std::getenv("DCN_CPU_CAPABILITY");
    if (env == nullptr || *env == '\0') env = std::getenv("ATEN_CPU_CAPABILITY");
    if (env == nullptr || *env == '\0') return best;
    std::string value(env);
    for (auto& ch : value) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    Isa wanted = best;
    if (value == "default") wanted = Isa::kDefault;
    else if (value == "avx2") wanted = Isa::kAvx2;
    else if (value == "avx512" || value == "avx512_vnni" || value == "avx512_bf16" ||
             value == "amx" || value == "avx512_fp16") wanted = Isa::kAvx512;
    return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
  }();
  return isa;
}

template <typename T>
struct RowKernels {
  void (*blend)(T*, const T*, const T*, const T*, const T*, T, T, T, T, int64_t);
  void (*axpy)(T*, const T*, T, int64_t);
  void (*dot4)(const T*, const T*, const T*, const T*, const T*, int64_t, T*);
};

// bfloat16 data: only the forward blend exists (weights in float).
template <>
struct RowKernels<c10::BFloat16> {
  void (*blend)(c10::BFloat16*, const c10::BFloat16*, const c10::BFloat16*, const c10::BFloat16*,
                const c10::BFloat16*, float, float, float, float, int64_t);
};

// The version of a row kernel for the chosen instruction set.
#if DCN_X86_DISPATCH
#define DCN_BY_ISA(Type, name)                                           \
  (chosen_isa() == Isa::kAvx512 ? static_cast<Type>(isa_avx512::name)    \
   : chosen_isa() == Isa::kAvx2 ? static_cast<Type>(isa_avx2::name)      \
                                : static_cast<Type>(isa_default::name))
#else
#define DCN_BY_ISA(Type, name) static_cast<Type>(isa_default::name)
#endif

template <typename T>
const RowKernels<T>& row_kernels() {
  using Blend = void (*)(T*, const T*, const T*, const T*, const T*, T, T, T, T, int64_t);
  using Axpy = void (*)(T*, const T*, T, int64_t);
  using Dot4 = void (*)(const T*, const T*, const T*, const T*, const T*, int64_t, T*);
  static const RowKernels<T> kernels{DCN_BY_ISA(Blend, blend_row), DCN_BY_ISA(Axpy, axpy_row),
                                     DCN_BY_ISA(Dot4, dot4_row)};
  return kernels;
}

template <>
const RowKernels<c10::BFloat16>& row_kernels<c10::BFloat16>() {
  using Blend = void (*)(c10::BFloat16*, const c10::BFloat16*, const c10::BFloat16*,
                         const c10::BFloat16*, const c10::BFloat16*, float, float, float, float,
                         int64_t);
  static const RowKernels<c10::BFloat16> kernels{DCN_BY_ISA(Blend, blend_row)};
  return kernels;
}

// Which library computes the products: kAuto (oneDNN for the two products shaped like a
// convolution's forward pass -- the output and the column gradient --, BLAS for the weight
// gradient, where oneDNN's 1x1 form needs two extra layout copies), kOneDnn (all three through
// oneDNN) or kBlas (all three through at::mm). DCN_CPU_GEMM or set_cpu_gemm() choose; the choice
// applies to float32, and to bfloat16 on AVX-512 CPUs (elsewhere bfloat16 uses ATen's matmul);
// double always uses BLAS, and so does everything when torch.backends.mkldnn is disabled.
enum class Gemm { kAuto = 0, kOneDnn = 1, kBlas = 2 };

Gemm parse_gemm(const std::string& name) {
  if (name == "onednn") return Gemm::kOneDnn;
  if (name == "blas") return Gemm::kBlas;
  TORCH_CHECK(name == "auto", "dcn: the CPU product must be 'auto', 'onednn' or 'blas', got '", name,
              "'");
  return Gemm::kAuto;
}

std::atomic<int> gemm_choice{-1};

Gemm chosen_gemm() {
  int choice = gemm_choice.load();
  if (choice < 0) {
    const char* env = std::getenv("DCN_CPU_GEMM");
    choice = static_cast<int>((env && *env) ? parse_gemm(env) : Gemm::kAuto);
    gemm_choice.store(choice);
  }
  if (!at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) return Gemm::kBlas;
  return static_cast<Gemm>(choice);
}

const char* gemm_name(Gemm gemm) {
  switch (gemm) {
    case Gemm::kOneDnn: return "onednn";
    case Gemm::kBlas: return "blas";
    default: return "auto";
  }
}

struct Geometry {
  int64_t channels, height, width, out_h, out_w, kernel_h, kernel_w, taps, points;
  int64_t deformable_groups, dg_channels;
  ConvArgs args;
};

// The four corner rows of one bilinear sample. Corners outside the image point to a row of
// zeros and have weight 0, so that they contribute nothing (and no NaN from 0 * garbage).
template <typename T, typename D = T>
struct Corners {
  const D* row[4];
  T weight[4];
  T frac_y, frac_x;
  bool valid[4];
};

template <typename T, typename D>
inline void locate(const D* image, const D* zero_row, const Geometry& geo, T y, T x,
                   Corners<T, D>& c) {
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
// T: coordinates, offsets, mask and weights (float / double); D: image and columns (T, or
// bfloat16 with float arithmetic).
template <typename T, typename D = T>
void fill_columns(const D* image, const D* zero_row, const T* offset, const T* mask,
                  const Geometry& geo, int64_t c_lo, int64_t c_hi, int64_t p0, int64_t p1,
                  D* columns) {
  const int64_t width = c_hi - c_lo;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, geo.taps * width));
  const auto blend_row = row_kernels<D>().blend;
  at::parallel_for(p0, p1, grain, [&](int64_t begin, int64_t end) {
    // Per pixel, first locate every sample and prefetch its four corner rows, then blend: the
    // rows' loads (scattered over the image) are in flight together instead of one after another.
    constexpr int64_t kMaxSamples = 32;
    struct Sample {
      const D* row[4];
      T weight[4];
      int64_t column, c_begin, c_end;
    };
    Sample samples[kMaxSamples];
    Corners<T, D> c;
    for (int64_t p = begin; p < end; ++p) {
      D* pixel_columns = columns + (p - p0) * geo.taps * width;
      int64_t count = 0;
      auto flush = [&] {
        for (int64_t i = 0; i < count; ++i) {
          const Sample& s = samples[i];
          blend_row(pixel_columns + s.column, s.row[0] + s.c_begin, s.row[1] + s.c_begin,
                    s.row[2] + s.c_begin, s.row[3] + s.c_begin, s.weight[0], s.weight[1],
                    s.weight[2], s.weight[3], s.c_end - s.c_begin);
        }
        count = 0;
      };
      for_each_sample<T>(geo, offset, mask, p, c_lo, c_hi,
                         [&](int64_t k, int64_t, int64_t cb, int64_t ce, T y, T x, T m) {
                           locate(image, zero_row, geo, y, x, c);
                           Sample& s = samples[count++];
                           for (int i = 0; i < 4; ++i) {
                             s.row[i] = c.row[i];
                             s.weight[i] = m * c.weight[i];
                             DCN_PREFETCH(c.row[i] + cb);
                           }
                           s.column = k * width + (cb - c_lo);
                           s.c_begin = cb;
                           s.c_end = ce;
                           if (count == kMaxSamples) flush();
                         });
      flush();
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
  const auto dot4_row = row_kernels<T>().dot4;
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
  const auto axpy_row = row_kernels<T>().axpy;
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

// Pixels per tile: a column buffer of up to 2^23 elements (32 MB in float32). Smaller tiles keep
// the buffer in cache while it is filled, but each tile is one oneDNN call with its own weight
// reorder and blocking, and at the ResNet-18 shapes (AVX2, 1 and 2 threads) whole-image-sized
// tiles won: 1.21-1.26x F.conv2d at 2^23 against 1.42-1.53x at 2^19. The buffer is kept between
// calls (column_workspace), so its pages are not faulted in again on every call.
std::atomic<int64_t> tile_elements_setting{0};  // 0: DCN_TILE_ELEMENTS, else 2^23
std::atomic<int> per_thread_tiles_setting{-1};  // -1: when tiles >= 2 x threads, 0: never, 1: always

int64_t tile_budget() {
  const int64_t chosen = tile_elements_setting.load();
  if (chosen > 0) return chosen;
  static const int64_t from_env = [] {
    const char* env = std::getenv("DCN_TILE_ELEMENTS");
    return env ? std::max<int64_t>(1, std::atoll(env)) : (int64_t(1) << 23);
  }();
  return from_env;
}

bool per_thread_tiles(int64_t tiles) {
  const int setting = per_thread_tiles_setting.load();
  if (setting >= 0) return setting == 1 && tiles > 1;
  return tiles >= 2 * at::get_num_threads();
}

// A (rows, cols) buffer of `options`' dtype for the calling thread, kept between its calls and grown
// as needed: the column buffer is tens of MB, and a fresh allocation would fault its pages in on
// every call. Only threads that call the op keep one (two slots: forward, backward), at most
// 2^23 elements each by default; the worker threads of per-thread tiling allocate per call
// (`cached` false), so the memory held does not grow with the thread count.
at::Tensor column_workspace(int64_t rows, int64_t cols, const at::TensorOptions& options, int slot,
                            bool cached = true) {
  if (!cached) return at::empty({rows, cols}, options);
  thread_local at::Tensor cache[2];
  at::Tensor& buffer = cache[slot];
  const int64_t needed = rows * cols * static_cast<int64_t>(c10::elementSize(options.dtype().toScalarType()));
  if (!buffer.defined() || buffer.numel() < needed) buffer = at::empty({needed}, at::TensorOptions().dtype(at::kByte));
  return at::from_blob(buffer.data_ptr(), {rows, cols}, options);
}

int64_t tile_pixels(const Geometry& geo, int64_t group_channels) {
  const int64_t per_pixel = std::max<int64_t>(1, geo.taps * group_channels);
  const int64_t tile = std::max<int64_t>(64, tile_budget() / per_pixel);
  return std::min(tile, geo.points);
}


// ------------------------------------------------------------------------------------------------
// The products. `rows` (n, K) holds one row per output pixel, contiguous; `matrix` (O, K).

// (n, K) rows -> the 1x1-convolution input they are in memory: a channels-last (1, K, 1, n) view.
at::Tensor rows_as_image(const at::Tensor& rows) {
  return rows.view({1, 1, rows.size(0), rows.size(1)}).permute({0, 3, 1, 2});
}

// A channels-last (1, C, 1, n) convolution output -> its (n, C) rows (a view when it is dense).
at::Tensor image_as_rows(const at::Tensor& image) {
  return image.permute({0, 2, 3, 1}).reshape({image.size(3), image.size(1)});
}

// oneDNN's convolution, called directly: at::conv2d would route a 1x1 convolution on one
// thread (as inside a parallel region) to its own im2col + BLAS path instead.
at::Tensor onednn_1x1(const at::Tensor& image, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias) {
  return at::mkldnn_convolution(image, weight, bias, {0, 0}, {1, 1}, {1, 1}, 1);
}

struct Products {
  bool onednn_forward;  // output and column gradient through oneDNN
  bool onednn_weight;   // weight gradient through oneDNN
  at::Tensor matrix;         // (O, K)
  at::Tensor matrix_1x1;     // (O, K, 1, 1)
  at::Tensor matrix_t_1x1;   // (K, O, 1, 1), backward only

  Products(const at::Tensor& m, bool backward) : matrix(m) {
    // oneDNN for float32; for bfloat16 only with AVX-512 (its bf16 convolutions need it), else
    // ATen's own bf16 matmul. Double always uses BLAS.
    Gemm gemm = Gemm::kBlas;
    if (m.scalar_type() == at::kFloat) gemm = chosen_gemm();
    if (m.scalar_type() == at::kBFloat16 && chosen_isa() == Isa::kAvx512) gemm = chosen_gemm();
    onednn_forward = gemm != Gemm::kBlas;
    onednn_weight = gemm == Gemm::kOneDnn;
    if (onednn_forward) {
      matrix_1x1 = m.view({m.size(0), m.size(1), 1, 1});
      if (backward) matrix_t_1x1 = m.t().contiguous().view({m.size(1), m.size(0), 1, 1});
    }
  }

  // (n, O) = rows (n, K) x matrix^T (+ bias)
  at::Tensor forward(const at::Tensor& rows, const std::optional<at::Tensor>& bias) const {
    if (onednn_forward) return image_as_rows(onednn_1x1(rows_as_image(rows), matrix_1x1, bias));
    // addmm: the bias joins the float accumulation, one rounding (matters for bfloat16)
    return bias.has_value() ? at::addmm(*bias, rows, matrix.t()) : at::mm(rows, matrix.t());
  }

  // (n, K) = grad_rows (n, O) x matrix
  at::Tensor column_grad(const at::Tensor& grad_rows) const {
    if (onednn_forward) {
      return image_as_rows(onednn_1x1(rows_as_image(grad_rows), matrix_t_1x1, std::nullopt));
    }
    return at::mm(grad_rows, matrix);
  }

  // grad_matrix (O, K) += grad_rows (n, O)^T x rows (n, K). For oneDNN: a 1x1 convolution with the
  // n pixels as input channels and the K columns as positions, (1, n, 1, K) x (O, n, 1, 1).
  void accumulate_weight_grad(at::Tensor& grad_matrix, const at::Tensor& grad_rows,
                              const at::Tensor& rows) const {
    if (onednn_weight) {
      const int64_t n = rows.size(0);
      const auto image = rows.view({1, n, 1, rows.size(1)});
      const auto weight = grad_rows.t().contiguous().view({grad_rows.size(1), n, 1, 1});
      grad_matrix.add_(onednn_1x1(image, weight, std::nullopt).view_as(grad_matrix));
    } else {
      grad_matrix.addmm_(grad_rows.t(), rows);
    }
  }
};

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// (N, H, W, C) contiguous data of a 4-D tensor: a view for a channels-last one, else a copy.
at::Tensor nhwc(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }

}  // namespace

std::string cpu_capability() { return isa_name(chosen_isa()); }

std::string cpu_gemm() { return gemm_name(chosen_gemm()); }

void set_cpu_gemm(const std::string& name) { gemm_choice.store(static_cast<int>(parse_gemm(name))); }

void set_cpu_tiling(int64_t tile_elements, int64_t per_thread) {
  TORCH_CHECK(tile_elements >= 0 && per_thread >= -1 && per_thread <= 1,
              "dcn: set_cpu_tiling(tile_elements >= 0 (0: default), per_thread -1 (auto), 0 or 1)");
  tile_elements_setting.store(tile_elements);
  per_thread_tiles_setting.store(static_cast<int>(per_thread));
}

namespace {

// The forward pass for coordinates of type T and data (image, columns, weight, output) of type D.
template <typename T, typename D>
void forward_impl(const Geometry& geo, const at::Tensor& image, const at::Tensor& weight_matrix,
                  const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                  const std::optional<at::Tensor>& mask, bool channels_last, at::Tensor& output) {
  const int64_t batch = image.size(0);
  const int64_t out_channels = output.size(1);
  const int64_t groups = geo.args.groups;
  const int64_t group_in = geo.channels / groups;
  const int64_t group_out = out_channels / groups;
  const int64_t tile = tile_pixels(geo, group_in);
  auto zero_row = at::zeros({geo.channels}, image.options());
  const D* zero = zero_row.data_ptr<D>();
  const auto output_rows_all =
      channels_last ? output.permute({0, 2, 3, 1}).view({batch, geo.points, out_channels})
                    : at::Tensor();
  for (int64_t g = 0; g < groups; ++g) {
    const Products products(weight_matrix[g], false);
    const std::optional<at::Tensor> bias_g =
        bias.has_value() ? std::optional<at::Tensor>(bias->narrow(0, g * group_out, group_out))
                         : std::nullopt;
    for (int64_t n = 0; n < batch; ++n) {
      const D* image_n = image.data_ptr<D>() + n * geo.height * geo.width * geo.channels;
      const T* offset_n = offset.data_ptr<T>() + n * offset.stride(0);
      const T* mask_n = mask.has_value() ? mask->data_ptr<T>() + n * mask->stride(0) : nullptr;
      // One tile: fill its columns, (pixels, out) = columns x weight^T, then into the output
      // (a transposed copy for NCHW, a plain one for channels-last).
      auto run_tile = [&](int64_t p0, at::Tensor& cols_buffer) {
        const int64_t p1 = std::min(geo.points, p0 + tile);
        auto cols = cols_buffer.narrow(0, 0, p1 - p0);
        fill_columns<T, D>(image_n, zero, offset_n, mask_n, geo, g * group_in, (g + 1) * group_in,
                           p0, p1, cols.data_ptr<D>());
        const auto rows = products.forward(cols, bias_g);
        if (channels_last) {
          output_rows_all[n].narrow(0, p0, p1 - p0).narrow(1, g * group_out, group_out).copy_(rows);
        } else {
          output[n].view({out_channels, geo.points})
              .narrow(0, g * group_out, group_out)
              .narrow(1, p0, p1 - p0)
              .copy_(rows.t());
        }
      };
      const int64_t tiles = (geo.points + tile - 1) / tile;
      if (per_thread_tiles(tiles)) {
        // Enough tiles: each thread runs whole tiles (single-threaded fill and product), so there
        // is one parallel region per image instead of several per tile; this matters a lot
        // when the cores are shared with other processes.
        at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
          auto cols_buffer =
              column_workspace(tile, geo.taps * group_in, image.options(), 0, /*cached=*/false);
          for (int64_t t = t0; t < t1; ++t) run_tile(t * tile, cols_buffer);
        });
      } else {
        auto cols_buffer = column_workspace(tile, geo.taps * group_in, image.options(), 0);
        for (int64_t t = 0; t < tiles; ++t) run_tile(t * tile, cols_buffer);
      }
    }
  }
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& offset,
                       const std::optional<at::Tensor>& mask, const ConvArgs& args) {
  at::NoGradGuard no_grad;
  const Geometry geo = make_geometry(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const bool channels_last = is_channels_last(input);
  auto output = channels_last
                    ? at::empty({batch, out_channels, geo.out_h, geo.out_w},
                                input.options().memory_format(at::MemoryFormat::ChannelsLast))
                    : at::empty({batch, out_channels, geo.out_h, geo.out_w}, input.options());
  if (batch == 0) return output;
  const auto image = nhwc(input);
  // (groups, out/groups, taps * in/groups), taps-major to match the column buffer.
  const auto weight_matrix = weight.permute({0, 2, 3, 1}).contiguous().view(
      {groups, out_channels / groups, geo.taps * (geo.channels / groups)});
  if (input.scalar_type() == at::kBFloat16) {
    // bfloat16 data (the autocast inference path): positions and bilinear weights in float (the
    // float32 offset and mask are checked with the other inputs, dcn.cpp check_inputs).
    forward_impl<float, c10::BFloat16>(geo, image, weight_matrix, bias, offset, mask, channels_last,
                                       output);
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_forward_cpu", [&] {
    forward_impl<scalar_t, scalar_t>(geo, image, weight_matrix, bias, offset, mask, channels_last,
                                     output);
  });
  return output;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& weight, const at::Tensor& offset,
                                     const std::optional<at::Tensor>& mask, bool has_bias,
                                     const ConvArgs& args) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(input.scalar_type() != at::kBFloat16,
              "dcn: the CPU backward pass takes float32 or float64 (bfloat16 is inference only)");
  const Geometry geo = make_geometry(input, weight, offset, args);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  const int64_t groups = args.groups;
  const int64_t group_in = geo.channels / groups;
  const int64_t group_out = out_channels / groups;
  const bool channels_last = is_channels_last(input);
  const auto image = nhwc(input);
  // The output gradient as rows (N, pixels, O): a view of a channels-last gradient, else a copy.
  const auto grad_rows_all = nhwc(grad_output).view({batch, geo.points, out_channels});
  const auto weight_matrix =
      weight.permute({0, 2, 3, 1}).contiguous().view({groups, group_out, geo.taps * group_in});
  auto grad_image = at::zeros_like(image);
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = mask.has_value() ? at::zeros_like(*mask) : at::Tensor();
  auto grad_weight_matrix = at::zeros_like(weight_matrix);
  const int64_t tile = tile_pixels(geo, group_in);
  auto columns = column_workspace(tile, geo.taps * group_in, input.options(), 1);
  auto zero_row = at::zeros({geo.channels}, input.options());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcn_backward_cpu", [&] {
    const scalar_t* zero = zero_row.data_ptr<scalar_t>();
    const int64_t image_size = geo.height * geo.width * geo.channels;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c_lo = g * group_in;
      const int64_t c_hi = c_lo + group_in;
      const Products products(weight_matrix[g], true);
      auto grad_weight_g = grad_weight_matrix[g];
      for (int64_t n = 0; n < batch; ++n) {
        const scalar_t* image_n = image.data_ptr<scalar_t>() + n * image_size;
        scalar_t* grad_image_n = grad_image.data_ptr<scalar_t>() + n * image_size;
        const scalar_t* offset_n = offset.data_ptr<scalar_t>() + n * offset.stride(0);
        scalar_t* grad_offset_n = grad_offset.data_ptr<scalar_t>() + n * offset.stride(0);
        const scalar_t* mask_n =
            mask.has_value() ? mask->data_ptr<scalar_t>() + n * mask->stride(0) : nullptr;
        scalar_t* grad_mask_n =
            mask.has_value() ? grad_mask.data_ptr<scalar_t>() + n * mask->stride(0) : nullptr;
        for (int64_t p0 = 0; p0 < geo.points; p0 += tile) {
          const int64_t p1 = std::min(geo.points, p0 + tile);
          auto cols = columns.narrow(0, 0, p1 - p0);
          auto grad_rows = grad_rows_all[n].narrow(0, p0, p1 - p0).narrow(1, g * group_out, group_out);
          if (groups > 1) grad_rows = grad_rows.contiguous();
          fill_columns<scalar_t>(image_n, zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1,
                                 cols.data_ptr<scalar_t>());
          products.accumulate_weight_grad(grad_weight_g, grad_rows, cols);
          const auto grad_cols = products.column_grad(grad_rows).contiguous();
          const scalar_t* gc = grad_cols.data_ptr<scalar_t>();
          offset_mask_grad<scalar_t>(image_n, zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1, gc,
                                     grad_offset_n, grad_mask_n);
          input_grad<scalar_t>(zero, offset_n, mask_n, geo, c_lo, c_hi, p0, p1, gc, grad_image_n);
        }
      }
    }
  });
  auto grad_input = grad_image.permute({0, 3, 1, 2});
  if (!channels_last) grad_input = grad_input.contiguous();
  auto grad_weight = grad_weight_matrix.view({out_channels, geo.kernel_h, geo.kernel_w, group_in})
                         .permute({0, 3, 1, 2})
                         .contiguous();
  auto grad_bias = has_bias ? grad_output.sum({0, 2, 3}) : at::Tensor();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace dcn
