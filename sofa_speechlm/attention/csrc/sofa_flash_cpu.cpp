// Flash-attention forward for the CPU that also returns each query row's max score and its
// first argmax: SOFA's gate sigmoid(lse - max) and the gradient through max(S) need both, and
// torch's own CPU flash kernel returns only the logsumexp. Online softmax already tracks the
// running row max, so keeping it costs nothing; a separate Q.K^T pass for the max would add
// about 15% to a forward+backward step.
//
// Inputs are fp32 [B, H, L, D] with unit stride along D (any other strides), an optional fp32
// additive mask broadcast to [B, H, Lq, Lk] with unit stride along keys (-inf forbids a key),
// and a causal flag (top-left triangle, used for Lq == Lk). Outputs: out = softmax(S)V times a
// per-row gate ([B, H, Lq, Dv]), lse, row max and first argmax ([B, H, Lq]). The gate is 1, SOFA's
// sigmoid(lse - max) or Softmax1's sigmoid(lse): with s = sum_j exp(S_j - max) the gated output
// is sum_j exp(S_j - max) V_j over s, 1 + s or s + exp(-max), so gating costs nothing. A row
// with no allowed key gives out = 0, lse = max = -inf and argmax = 0; a row with a NaN score
// gives out = lse = max = NaN and argmax 0, so that a backward through it yields NaN gradients
// (which trainers skip) rather than an index error.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

// MKL's BLAS, which torch's CPU build links and exports (column-major, Fortran calling style).
// Inside at::parallel_for it runs single-threaded: the OpenMP runtime is torch's own.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kLanes = Vec::size();
// Output gates (see the header): out = softmax(S)V times 1, sigmoid(lse - max) or sigmoid(lse).
constexpr int64_t kGateNone = 0, kGateSofa = 1, kGateSoftmax1 = 2;

// Row-major C[m x n] = alpha * A[m x k] . op(B) + beta * C, with B given as [n x k] (op = B^T,
// b_transposed) or [k x n]; each row of A, B, C contiguous with the given leading dimension.
void row_major_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                    int64_t ldb, bool b_transposed, float beta, float* c, int64_t ldc) {
  // Row-major C = A op(B) is column-major C^T = op(B)^T A^T.
  const char trans_b = b_transposed ? 'T' : 'N', trans_a = 'N';
  const int mi = n, ni = m, ki = k, la = ldb, lb = lda, lc = ldc;
  sgemm_(&trans_b, &trans_a, &mi, &ni, &ki, &alpha, b, &la, a, &lb, &beta, c, &lc);
}

// Max of row[0:n] (n a multiple of the vector width) and the first index reaching it.
std::pair<float, int64_t> first_max(const float* row, int64_t n) {
  Vec best(kNegInf);
  for (int64_t j = 0; j < n; j += kLanes) best = at::vec::maximum(best, Vec::loadu(row + j));
  const float value = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, best);
  if (!(value > kNegInf)) return {value, -1};
  const Vec target(value);
  for (int64_t j = 0; j < n; j += kLanes) {
    // zero_mask marks lanes whose comparison result is all zero bits, i.e. lanes equal to value.
    const int equal = (Vec::loadu(row + j) != target).zero_mask();
    if (equal) return {value, j + __builtin_ctz(equal)};
  }
  return {value, -1};  // unreachable for finite or +inf maxima; NaN rows keep no index
}

// row[0:n] <- exp(row - shift), returning the sum.
float exp_and_sum(float* row, int64_t n, float shift) {
  const Vec offset(shift);
  Vec total(0.0f);
  for (int64_t j = 0; j < n; j += kLanes) {
    const Vec e = (Vec::loadu(row + j) - offset).exp_u20();
    e.store(row + j);
    total += e;
  }
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, total);
}

struct Strides {
  int64_t batch, head, row;
  explicit Strides(const at::Tensor& t) : batch(t.stride(0)), head(t.stride(1)), row(t.stride(2)) {}
};

}  // namespace

std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& mask, bool causal, double scale,
                                int64_t q_block, int64_t kv_block, int64_t gate) {
  TORCH_CHECK(gate == kGateNone || gate == kGateSofa || gate == kGateSoftmax1, "sofa_flash_cpu: unknown gate ", gate);
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                  v.scalar_type() == at::kFloat,
              "sofa_flash_cpu: q, k, v must be fp32 CPU tensors");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "sofa_flash_cpu: q, k, v must be [B, H, L, D]");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "sofa_flash_cpu: head_dim must be contiguous");
  TORCH_CHECK(kv_block % kLanes == 0 && q_block > 0, "sofa_flash_cpu: kv_block must be a multiple of ", kLanes);
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), dim = q.size(3);
  const int64_t k_len = k.size(2), v_dim = v.size(3);
  TORCH_CHECK(k.size(0) == batch && k.size(1) == heads && k.size(3) == dim && v.size(0) == batch &&
                  v.size(1) == heads && v.size(2) == k_len,
              "sofa_flash_cpu: q, k, v shapes do not match");
  TORCH_CHECK(!causal || q_len == k_len, "sofa_flash_cpu: causal needs q_len == k_len");
  const float* mask_data = nullptr;
  int64_t mask_batch = 0, mask_head = 0, mask_row = 0;
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kFloat && m.dim() == 4 && m.size(2) == q_len && m.size(3) == k_len &&
                    m.stride(3) == 1,
                "sofa_flash_cpu: mask must be fp32 [B|1, H|1, Lq, Lk] with unit stride along keys");
    mask_data = m.data_ptr<float>();
    mask_batch = m.size(0) == 1 ? 0 : m.stride(0);
    mask_head = m.size(1) == 1 ? 0 : m.stride(1);
    mask_row = m.stride(2);
  }

  auto options = q.options();
  at::Tensor out = at::empty({batch, heads, q_len, v_dim}, options);
  at::Tensor lse = at::empty({batch, heads, q_len}, options);
  at::Tensor row_max = at::empty({batch, heads, q_len}, options);
  at::Tensor argmax = at::empty({batch, heads, q_len}, options.dtype(at::kLong));
  const Strides qs(q), ks(k), vs(v);
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  float* lse_data = lse.data_ptr<float>();
  float* max_data = row_max.data_ptr<float>();
  int64_t* arg_data = argmax.data_ptr<int64_t>();

  const int64_t q_blocks = (q_len + q_block - 1) / q_block;
  // Buffers as large as this call needs: a decoding step (one query, a few hundred keys) must
  // not pay for a full tile (256 KiB, a fresh mapping and its page faults on every call).
  const int64_t tile_rows = std::min(q_block, q_len);
  const int64_t tile_cols = std::min(kv_block, (k_len + kLanes - 1) / kLanes * kLanes);
  at::parallel_for(0, batch * heads * q_blocks, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<float[]> score_tile(new float[tile_rows * tile_cols]);  // written before read
    std::vector<float> acc(tile_rows * v_dim), sums(tile_rows), maxima(tile_rows);
    std::vector<int64_t> first(tile_rows);
    float* const scores = score_tile.get();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (heads * q_blocks), h = task / q_blocks % heads, q_start = task % q_blocks * q_block;
      const int64_t rows = std::min(tile_rows, q_len - q_start);
      const float* q_rows = q_data + b * qs.batch + h * qs.head + q_start * qs.row;
      const float* k_head = k_data + b * ks.batch + h * ks.head;
      const float* v_head = v_data + b * vs.batch + h * vs.head;
      const float* mask_rows = mask_data ? mask_data + b * mask_batch + h * mask_head + q_start * mask_row : nullptr;
      std::fill(acc.begin(), acc.begin() + rows * v_dim, 0.0f);
      std::fill(sums.begin(), sums.end(), 0.0f);
      std::fill(maxima.begin(), maxima.end(), kNegInf);
      std::fill(first.begin(), first.end(), -1);
      // Under the causal triangle, key blocks right of the last row's diagonal are skipped.
      const int64_t k_end = causal ? q_start + rows : k_len;
      for (int64_t k_start = 0; k_start < k_end; k_start += tile_cols) {
        const int64_t cols = std::min(tile_cols, k_end - k_start);
        const int64_t padded = (cols + kLanes - 1) / kLanes * kLanes;  // extra columns hold -inf
        row_major_gemm(rows, cols, dim, static_cast<float>(scale), q_rows, qs.row, k_head + k_start * ks.row, ks.row,
                       true, 0.0f, scores, tile_cols);
        const bool on_diagonal = causal && k_start + cols > q_start;
        for (int64_t r = 0; r < rows; ++r) {
          float* row = scores + r * tile_cols;
          if (mask_rows) {
            const float* bias = mask_rows + r * mask_row + k_start;
            for (int64_t j = 0; j < cols; ++j) row[j] += bias[j];
          }
          // Keys after this row's position (causal) and the padding columns are forbidden.
          const int64_t allowed = on_diagonal ? std::clamp<int64_t>(q_start + r - k_start + 1, 0, cols) : cols;
          std::fill(row + allowed, row + padded, kNegInf);
          const auto [block_max, block_arg] = first_max(row, padded);
          if (std::isnan(block_max)) maxima[r] = kNaN;  // the row's output is NaN, whatever follows
          const float previous = maxima[r];
          if (block_max > previous) {  // later keys win only when strictly larger: first argmax on ties
            maxima[r] = block_max;
            first[r] = k_start + block_arg;
          }
          const float current = maxima[r];
          if (!(current > kNegInf)) {  // nothing allowed yet: this block adds nothing
            std::fill(row, row + padded, 0.0f);
            continue;
          }
          const float block_sum = exp_and_sum(row, padded, current);
          if (current != previous) {
            const float rescale = std::exp(previous - current);  // 0 when previous is -inf
            float* acc_row = acc.data() + r * v_dim;
            for (int64_t d = 0; d < v_dim; ++d) acc_row[d] *= rescale;
            sums[r] *= rescale;
          }
          sums[r] += block_sum;
        }
        row_major_gemm(rows, v_dim, cols, 1.0f, scores, tile_cols, v_head + k_start * vs.row, vs.row, false,
                       1.0f, acc.data(), v_dim);
      }
      const int64_t first_row = (b * heads + h) * q_len + q_start;
      for (int64_t r = 0; r < rows; ++r) {
        const float total = sums[r];
        // total = sum_j exp(S_j - max): the gated denominators of the header follow from it.
        float denominator = total;
        if (gate == kGateSofa) denominator = 1.0f + total;
        if (gate == kGateSoftmax1) denominator = total + std::exp(-maxima[r]);
        const bool nan_row = std::isnan(maxima[r]);
        const float inverse = nan_row ? kNaN : total > 0.0f ? 1.0f / denominator : 0.0f;
        float* out_row = out_data + (first_row + r) * v_dim;
        const float* acc_row = acc.data() + r * v_dim;
        for (int64_t d = 0; d < v_dim; ++d) out_row[d] = acc_row[d] * inverse;
        lse_data[first_row + r] = nan_row ? kNaN : total > 0.0f ? maxima[r] + std::log(total) : kNegInf;
        max_data[first_row + r] = maxima[r];
        arg_data[first_row + r] = std::max<int64_t>(first[r], 0);
      }
    }
  });
  return {out, lse, row_max, argmax};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "flash attention forward returning the gated out, lse, row max and first argmax");
}
