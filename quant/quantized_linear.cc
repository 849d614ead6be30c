#include "quant/quantized_linear.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "quant/blockwise_math.h"

namespace loadstar {
namespace quant {
namespace {

absl::Status CheckDims(const Half* x, int64_t m, int64_t k) {
  if (x == nullptr || m < 1 || k < 1) {
    return absl::InvalidArgumentError(
        fmt::format("linear needs non-empty activations, got [{}, {}]", m, k));
  }
  return absl::OkStatus();
}

absl::Status CheckWeightShape(const std::vector<int64_t>& shape, int64_t k, int64_t* n) {
  if (shape.size() != 2 || shape[0] < 1 || shape[1] != k) {
    return absl::InvalidArgumentError(fmt::format(
        "weight shape must be [n, {}], got {} dimension(s) [{}, {}]", k, shape.size(),
        shape.empty() ? 0 : shape[0], shape.size() < 2 ? 0 : shape[1]));
  }
  *n = shape[0];
  return absl::OkStatus();
}

float RoundToHalf(float v) { return ToFloat(FromFloat<Half>(v)); }

float WeightAt(DType dtype, const void* w, int64_t i) {
  switch (dtype) {
    case DType::kF16:
      return ToFloat(static_cast<const Half*>(w)[i]);
    case DType::kBF16:
      return ToFloat(static_cast<const BFloat16*>(w)[i]);
    default:
      return static_cast<const float*>(w)[i];
  }
}

}  // namespace

absl::StatusOr<Int8Activations> QuantizeActivationsInt8(const Half* x, int64_t m, int64_t k,
                                                        float threshold) {
  if (absl::Status s = CheckDims(x, m, k); !s.ok()) return s;
  if (!(threshold >= 0.0f)) {
    return absl::InvalidArgumentError(fmt::format("threshold must be >= 0, got {}", threshold));
  }
  Int8Activations a;
  a.rows = m;
  a.cols = k;
  a.q.resize(m * k);
  a.row_scale.resize(m);
  std::vector<bool> outlier_col(k, false);
  auto is_outlier = [threshold](float v) { return threshold > 0.0f && fabsf(v) >= threshold; };
  for (int64_t r = 0; r < m; ++r) {
    const Half* row = x + r * k;
    float absmax = 0.0f;
    for (int64_t c = 0; c < k; ++c) {
      const float v = ToFloat(row[c]);
      if (is_outlier(v)) {
        outlier_col[c] = true;
      } else {
        absmax = fmaxf(absmax, fabsf(v));
      }
    }
    a.row_scale[r] = absmax;
    const float scale = Int8RowScale(absmax);
    for (int64_t c = 0; c < k; ++c) {
      const float v = ToFloat(row[c]);
      a.q[r * k + c] = is_outlier(v) ? int8_t{0} : Int8Quantize(v, scale);
    }
  }
  for (int64_t c = 0; c < k; ++c) {
    if (!outlier_col[c]) continue;
    a.outlier_cols.push_back(c);
    for (int64_t r = 0; r < m; ++r) a.q[r * k + c] = 0;
  }
  return a;
}

absl::StatusOr<std::vector<float>> LinearReference(const Half* x, int64_t m, int64_t k,
                                                   DType w_dtype, const void* w, int64_t n) {
  if (absl::Status s = CheckDims(x, m, k); !s.ok()) return s;
  if (w == nullptr || n < 1 ||
      (w_dtype != DType::kF32 && w_dtype != DType::kF16 && w_dtype != DType::kBF16)) {
    return absl::InvalidArgumentError(
        fmt::format("reference weight must be F32/F16/BF16 [n >= 1, k], got {} n={}",
                    DTypeName(w_dtype), n));
  }
  std::vector<float> xf(m * k);
  for (int64_t i = 0; i < m * k; ++i) xf[i] = ToFloat(x[i]);
  std::vector<float> y(m * n);
  std::vector<float> wrow(k);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t c = 0; c < k; ++c) wrow[c] = WeightAt(w_dtype, w, j * k + c);
    for (int64_t r = 0; r < m; ++r) {
      float acc = 0.0f;
      for (int64_t c = 0; c < k; ++c) acc += xf[r * k + c] * wrow[c];
      y[r * n + j] = acc;
    }
  }
  return y;
}

absl::StatusOr<std::vector<float>> Int8Linear(const Half* x, int64_t m, int64_t k,
                                              const QuantizedInt8& w, float threshold) {
  int64_t n = 0;
  if (absl::Status s = CheckWeightShape(w.shape, k, &n); !s.ok()) return s;
  if (static_cast<int64_t>(w.weight.size()) != n * k ||
      static_cast<int64_t>(w.scb.size()) != n) {
    return absl::InvalidArgumentError("int8 weight/SCB sizes do not match the shape");
  }
  auto a = QuantizeActivationsInt8(x, m, k, threshold);
  if (!a.ok()) return a.status();
  // Dequantized weight columns of the outliers, fp16 as bitsandbytes' subB.
  const std::vector<int64_t>& cols = a->outlier_cols;
  std::vector<float> sub_w(n * cols.size());
  for (int64_t j = 0; j < n; ++j) {
    for (size_t o = 0; o < cols.size(); ++o) {
      sub_w[j * cols.size() + o] =
          RoundToHalf(Int8Dequantize(w.weight[j * k + cols[o]], w.scb[j]));
    }
  }
  std::vector<float> y(m * n);
  for (int64_t r = 0; r < m; ++r) {
    const int8_t* qx = a->q.data() + r * k;
    for (int64_t j = 0; j < n; ++j) {
      const int8_t* qw = w.weight.data() + j * k;
      int32_t acc = 0;
      for (int64_t c = 0; c < k; ++c) acc += int32_t{qx[c]} * int32_t{qw[c]};
      // Step 2: three roundings in this order, as int8_mm_dequant.
      float v = static_cast<float>(acc) * kInt8MatmulDequant;
      v = v * a->row_scale[r];
      v = v * w.scb[j];
      float out = RoundToHalf(v);
      if (!cols.empty()) {  // step 3: addmm in fp32, one rounding to fp16
        float sum = 0.0f;
        for (size_t o = 0; o < cols.size(); ++o) {
          sum += ToFloat(x[r * k + cols[o]]) * sub_w[j * cols.size() + o];
        }
        out = RoundToHalf(out + sum);
      }
      y[r * n + j] = out;
    }
  }
  return y;
}

absl::StatusOr<std::vector<float>> Fp4Linear(const Half* x, int64_t m, int64_t k,
                                             const Quantized4bit& w) {
  if (absl::Status s = CheckDims(x, m, k); !s.ok()) return s;
  int64_t n = 0;
  if (absl::Status s = CheckWeightShape(w.shape, k, &n); !s.ok()) return s;
  std::vector<Half> wdq(n * k);
  if (absl::Status s = Dequantize4bit(w, DType::kF16, wdq.data()); !s.ok()) return s;
  auto y = LinearReference(x, m, k, DType::kF16, wdq.data(), n);
  if (!y.ok()) return y.status();
  for (float& v : *y) v = RoundToHalf(v);
  return y;
}

absl::StatusOr<LinearError> CompareToReference(const std::vector<float>& y,
                                               const std::vector<float>& ref) {
  if (y.size() != ref.size()) {
    return absl::InvalidArgumentError(
        fmt::format("output has {} elements, reference {}", y.size(), ref.size()));
  }
  LinearError e;
  e.count = static_cast<int64_t>(y.size());
  double ref_max = 0, diff2 = 0, ref2 = 0;
  bool nan = false;
  for (size_t i = 0; i < y.size(); ++i) {
    const double d = std::fabs(static_cast<double>(y[i]) - ref[i]);
    if (std::isnan(d)) nan = true;
    e.max_abs = std::max(e.max_abs, d);
    ref_max = std::max(ref_max, std::fabs(static_cast<double>(ref[i])));
    diff2 += d * d;
    ref2 += static_cast<double>(ref[i]) * ref[i];
  }
  if (nan) {
    const double inf = std::numeric_limits<double>::infinity();
    return LinearError{inf, inf, inf, e.count};
  }
  e.max_rel = ref_max > 0 ? e.max_abs / ref_max : (e.max_abs > 0 ? HUGE_VAL : 0.0);
  e.relative_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? HUGE_VAL : 0.0);
  return e;
}

}  // namespace quant
}  // namespace loadstar
