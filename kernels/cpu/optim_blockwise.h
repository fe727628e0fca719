// Fused blockwise-quantized optimizer updates on the CPU (8-bit and 4-bit
// states), and the fast exact nearest-code search they use.
//
// n       parameter elements
// B       block_size: a power of two in [32, 4096]; nb = ceil(n / B) blocks
// K       codebook size: 2..256 values sorted ascending (256 for 8-bit
//         states, 16 for 4-bit states)
//
// One call updates one parameter tensor. Per block it dequantizes the codes
// (code value * block absmax), updates the moments in f32 registers, updates
// the parameter from the UNQUANTIZED new moments, takes the new block absmax
// = max |state| and requantizes each state with the exact nearest code. The
// new moments of a block live in a stack buffer of B floats (two where
// blocks are pipelined: with the table path block k is requantized inside
// the loop that updates block k + 1); no full-size f32 copy of a state
// exists. Above kBlockwiseParallelMin, OpenMP threads take contiguous
// ranges of blocks.
//
// Nearest code: the index i that minimises |x - code[i]| exactly (as real
// numbers); on an exact tie (x on a midpoint) the UPPER index, the rule of
// quant/ (kernels/cpu/quantize.h). Equivalently i = #{j : x >= mid[j]},
// mid[j] = (code[j] + code[j+1]) / 2. x = state *
// (1 / absmax), with 1 / absmax in f32 and taken as 0 when absmax < FLT_MIN
// (as quant/ does; also keeps 1 / absmax finite).
// Sign fix (codebooks with negative and non-negative codes): a state with its
// sign bit set whose nearest code is >= 0 takes the next lower index, one with
// the sign bit clear whose nearest code is < 0 the next higher, so a decoded
// state keeps the sign bit of the state (a small negative momentum never
// becomes +0; -0 decodes to the smallest negative code times absmax).
//
// 4-bit codes are packed two per byte as quant/ packs them: the even element
// in the high nibble; an odd n leaves the last low nibble 0.
//
// Update rules (f32; fma(a, b, c) = a * b + c rounded once; g' = fma(wd, p, g)
// is the coupled-decay (L2) gradient, g itself when wd is 0 (AdamW, Lion,
// LAMB and decay-free runs: no fma, and -0 stays -0); t = step >= 1;
// c1 = 1 - b1^t,
// c2 = 1 - b2^t; scale = update_scale, the trust ratio from the caller):
//   momentum  s = fma(mu, s, g'), mu = b1 (0 at t = 1); p = fma(-lr, s, p)
//   nesterov  s as momentum;           p = fma(-lr, fma(mu, s, g'), p)
//   lars      s as momentum; u = s;    p = fma(-lr * scale, u, p)
//   rmsprop   s = fma(b1, s, (1 - b1) * (g' * g'))
//             p = fma(-lr, g' / (sqrt(s) + eps), p)
//   adagrad   s = fma(g', g', s);      p = fma(-lr, g' / (sqrt(s) + eps), p)
//   lion      q = fma(-lr * wd, p, p); d = sign(fma(b1, s, (1 - b1) * g))
//             s = fma(b2, s, (1 - b2) * g); p = fma(-lr, d, q)
//   adam      m = fma(b1, m, (1 - b1) * g'); v = fma(b2, v, (1 - b2) * g'^2)
//             (g' = g for AdamW, decoupled = true)
//             den = fma(sqrt(v), 1 / sqrt(c2), eps)
//             p = fma(-lr / c1, m / den, fma(-lr * wd, p, p))   (AdamW)
//             p = fma(-lr / c1, m / den, p)                     (Adam, L2)
//   lamb      m, v, den as AdamW; u = fma(wd, p, (1 / c1) * (m / den))
//             p = fma(-lr * scale, u, p)
// Adam/AdamW is the order of the 32-bit path (kernels/cpu/optim_update.h,
// AdamRule: PyTorch's, the decay on the old p), so 8-bit and 32-bit steps
// differ only by quantization. Adam/AdamW/LAMB have two states (m: signed
// map, v: unsigned map); the rest one. The scalars (-lr / c1 ...) are derived
// in f64 and rounded to f32 once, by blockwise_scalars(), which the reference
// shares.
//
// Trust ratio (LAMB, LARS): two passes over the same inputs. blockwise_norms
// recomputes the new moments exactly as blockwise_step would and returns
// sum(u^2) and sum(p^2) without writing anything; the caller forms the ratio
// (e.g. ||p|| / ||u||, or bitsandbytes' max_unorm clip) and passes it as
// update_scale to blockwise_step. Both passes compute u identically, so the
// ratio belongs to exactly the update that is applied.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/affine_codes.h"

namespace kbit::cpu {

// Blocks below this many total elements run on one thread (fork cost).
inline constexpr int64_t kBlockwiseParallelMin = int64_t{1} << 15;
inline constexpr int64_t kBlockwiseMinBlock = 32;
inline constexpr int64_t kBlockwiseMaxBlock = 4096;

enum class BlockwiseRule {
  momentum,
  nesterov,
  lars,
  rmsprop,
  adagrad,
  lion,
  adam,  // Adam and AdamW (decoupled decay)
  lamb,
};

// 1 or 2.
int blockwise_num_states(BlockwiseRule rule);
const char* blockwise_rule_name(BlockwiseRule rule);

// A codebook prepared for exact nearest-code search. Built once per map and
// shared by every parameter that uses it.
//
// Fast path: a bucket table indexed by the top 16 bits of the float (sign,
// exponent and 7 mantissa bits): 65536 entries, of which a run touches the
// few thousand its magnitudes reach. A bucket holds at most one midpoint.
// Entry E is (c << 16) + (0xFFFF - thr) - (high bits of x'), where c counts
// the midpoints below the bucket, thr is the threshold on the low 16 bits,
// and x' is the float's bit pattern u for positive x and, for codebooks
// with negative codes, ~u for negative x (whose low bits then run the other
// way). So E + x' carries into bit 16 exactly when the low bits pass the
// threshold, and byte 2 of E + x' is the code: one load, one xor and one
// add, no compare. The sign fix is folded into the entries. Unsigned
// codebooks give negative x the code of +0 whatever its low bits, so they
// need no flip (x' = u: the xor and its shift go). Codebooks the table
// cannot serve (repeated values, a midpoint at 0, two midpoints in one
// bucket) use a binary search over the midpoints instead; both are exact.
//
// Gather-free path: codebooks with a table whose midpoints lie on a few
// lines (affine_codes.h: dynamic, udynamic, linear maps and their 4-bit
// forms) also get a proven piecewise-affine map; the AVX-512 kernels
// evaluate it with in-register permutes and send the rare lanes it flags
// (near a midpoint) to the table.
class BlockCodebook {
 public:
  // values: (K) sorted ascending, finite, 2 <= K <= 256.
  BlockCodebook(const float* values, int size);

  int size() const { return int(values_.size()); }
  const float* values() const { return values_.data(); }
  // mid[j] rounded up to f32: x >= mid[j] exactly iff x >= mid_up()[j].
  const float* mid_up() const { return mid_up_.data(); }
  // Index z of the first code >= 0 (0 for unsigned codebooks).
  int first_nonneg() const { return first_nonneg_; }
  // Codes of both signs: requantization applies the sign fix.
  bool has_sign_fix() const {
    return first_nonneg_ > 0 && first_nonneg_ < size();
  }
  bool fast() const { return !table_.empty(); }
  // The proven affine map, or null (then the table serves every lane).
  const AffineCodes* affine() const { return affine_.get(); }

  // Nearest code index of x, no sign fix (binary search; exact, upper index
  // on ties).
  int nearest(float x) const;
  // The requantization index of x: nearest, then the sign fix (a set sign
  // bit gives an index < z, a clear one an index >= z).
  int quantize_index(float x) const;

  // Table layout, for the vector kernels: code(x) is byte 2 of
  // entries[u >> 16] + x', u = bits(x), x' = u ^ (int32(u) >> 31) when flip,
  // else u.
  struct Table {
    const uint32_t* entries;  // (65536)
    bool flip;                // the codebook has negative codes
  };
  Table table() const;

 private:
  void build_table();
  int quantize_table(float x) const;

  std::vector<float> values_;    // (K)
  std::vector<float> mid_up_;    // (K - 1)
  std::vector<uint32_t> table_;  // (65536) entries, see Table; or empty
  std::shared_ptr<const AffineCodes> affine_;  // null: table only
  int first_nonneg_ = 0;
  bool flip_ = false;  // values_[0] < 0
};

// idx[i] = cb.quantize_index(x[i]) (vectorized). x: (n), idx: (n).
void code_indices(const BlockCodebook& cb, const float* x, int64_t n,
                  uint8_t* idx);

// Which requantization the AVX-512 kernels use for codebooks with an affine
// map: the gather-free map, or the table's gathers (pipelined with the
// update). Both give the same codes; which is faster depends on the CPU (a
// 16-lane gather: ~20 cycles on Zen 4, ~8 on a Xeon). automatic (the
// default) times one small AdamW step both ways on first use and keeps the
// faster; the environment variable KBIT_REQUANT=affine or =table fixes it
// (another value is refused with a UserError at the first step). Builds
// without AVX-512 always use the table.
enum class RequantPath { automatic, affine, table };
// For tests and benchmarks; not while another thread runs a step.
void set_requant_path(RequantPath path);
// The path in use (affine or table), resolving automatic.
RequantPath requant_path();
const char* requant_path_name(RequantPath path);

struct BlockwiseHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;  // momentum / Adam b1 / RMSprop alpha / Lion b1
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;           // 1-based step count t, incremented by the caller
  float update_scale = 1.0f;  // trust ratio (LAMB, LARS); 1 otherwise
  bool decoupled = true;      // adam: true AdamW decay, false Adam's L2
};

// The f32 scalars of one step, derived in f64 (see the rule table above).
struct BlockwiseScalars {
  float b1 = 0, omb1 = 0, b2 = 0, omb2 = 0;
  float mu = 0;            // momentum coefficient (0 at t = 1)
  float wd = 0;            // coupled (L2) decay coefficient
  float lamb_wd = 0;       // LAMB's decay inside the update u
  float neg_decay = 0;     // -lr * wd for decoupled decay, else 0
  float neg_lr = 0;        // -lr
  float neg_lr_scale = 0;  // -lr * update_scale
  float eps = 0;
  float inv_c1 = 0;       // 1 / c1
  float inv_sqrt_c2 = 0;  // 1 / sqrt(c2)
  float neg_step = 0;     // -lr / c1
};
BlockwiseScalars blockwise_scalars(BlockwiseRule rule, const BlockwiseHyper& h);

// One quantized state of n elements.
struct QuantState {
  uint8_t* codes = nullptr;  // 8-bit: (n); 4-bit: ((n + 1) / 2), even high
  float* absmax = nullptr;   // (nb)
  const BlockCodebook* codebook = nullptr;
};

struct BlockwiseArgs {
  int64_t n = 0;
  int64_t block_size = 256;
  int bits = 8;              // 8 or 4 (codebook sizes 256 or 16)
  float* p = nullptr;        // (n)
  const float* g = nullptr;  // (n), finite (the optimizer skips bad steps)
  QuantState s1;             // m / momentum / accumulator
  QuantState s2;             // v (two-state rules only)
};

// One fused step (see the file comment). Throws kbit::Error on bad args.
void blockwise_step(BlockwiseRule rule, const BlockwiseHyper& h,
                    const BlockwiseArgs& a);

struct BlockwiseNorms {
  double update_sq = 0;  // sum of u^2 over the tensor
  double param_sq = 0;   // sum of p^2 over the tensor (before the step)
};
// First pass of LAMB / LARS: writes nothing. h.update_scale is ignored.
BlockwiseNorms blockwise_norms(BlockwiseRule rule, const BlockwiseHyper& h,
                               const BlockwiseArgs& a);

// Validates a (shapes, block size, bits, codebook sizes); throws kbit::Error.
void check_blockwise_args(BlockwiseRule rule, const BlockwiseArgs& a);

}  // namespace kbit::cpu
