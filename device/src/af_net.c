/* See af_net.h. The integer arithmetic follows TensorFlow Lite Micro's
 * reference kernels (gemmlowp's saturating rounding doubling high multiply,
 * then a rounding right shift), so the outputs match its outputs. */
#include "af_net.h"

#include <math.h>
#include <string.h>

/* Dual 16-bit multiply-accumulate where the core has it (Cortex-M4/M7/M33:
 * __ARM_FEATURE_DSP), as CMSIS-NN: four int8 values per 32-bit load, widened
 * to two int16 pairs by SXTB16, two MACs per SMLAD. The sums are the same
 * integers in any order, so the portable loop gives identical outputs.
 * AF_NET_DSP_EMULATE runs this same code on a host with C versions of the
 * three instructions (the tests compare both paths). */
/* Two int16 values in one word, the first in the low half (SMLAD's operands). */
static inline uint32_t halves(int32_t low, int32_t high) {
  return ((uint32_t)(uint16_t)low) | ((uint32_t)(uint16_t)high << 16);
}

#if defined(__ARM_FEATURE_DSP) && !defined(AF_NET_PORTABLE)
#include <arm_acle.h>
#define AF_NET_DSP 1
#define SXTB16(x) __sxtb16(x)
static inline uint32_t sxtb16_ror8(uint32_t x) { /* one instruction: SXTB16 with ROR #8 */
  uint32_t result;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(result) : "r"(x));
  return result;
}
#define SXTB16_ROR8(x) sxtb16_ror8(x)
#define SADD16(a, b) __sadd16((a), (b))
#define SMLAD(a, b, acc) __smlad((a), (b), (acc))
#elif defined(AF_NET_DSP_EMULATE) && !defined(AF_NET_PORTABLE)
#define AF_NET_DSP 1
static uint32_t SXTB16(uint32_t x) {
  return halves((int8_t)(x & 0xff), (int8_t)((x >> 16) & 0xff));
}
static uint32_t SXTB16_ROR8(uint32_t x) { return SXTB16((x >> 8) | (x << 24)); }
static uint32_t SADD16(uint32_t a, uint32_t b) {
  return halves((int16_t)(a & 0xffff) + (int16_t)(b & 0xffff),
                (int16_t)(a >> 16) + (int16_t)(b >> 16));
}
static int32_t SMLAD(uint32_t a, uint32_t b, int32_t acc) {
  return acc + (int16_t)(a & 0xffff) * (int16_t)(b & 0xffff) +
         (int16_t)(a >> 16) * (int16_t)(b >> 16);
}
#else
#define AF_NET_DSP 0
#endif

/* sum over i < n of (x[i] - zero_point) * w[i] */
static int32_t dot(const int8_t* x, const int8_t* w, int n, int32_t zero_point) {
  int32_t acc = 0;
  int i = 0;
#if AF_NET_DSP
  const uint32_t minus_zero_point = (uint32_t)(uint16_t)(int16_t)(-zero_point) * 0x00010001u;
  for (; i + 4 <= n; i += 4) {
    uint32_t xv, wv;
    memcpy(&xv, x + i, 4);  /* one (unaligned) 32-bit load each */
    memcpy(&wv, w + i, 4);
    acc = SMLAD(SADD16(SXTB16(xv), minus_zero_point), SXTB16(wv), acc);
    acc = SMLAD(SADD16(SXTB16_ROR8(xv), minus_zero_point), SXTB16_ROR8(wv), acc);
  }
#endif
  for (; i < n; ++i) acc += (x[i] - zero_point) * w[i];
  return acc;
}

/* x / 2^right, rounded half away from zero (gemmlowp's RoundingDivideByPOT). */
static inline int32_t divide_by_power_of_two(int32_t x, int right) {
  const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u);
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> right) + ((x & mask) > threshold ? 1 : 0);
}

/* gemmlowp's rounding doubling high multiply, (a * b + 2^30) / 2^31 with
 * its rounding toward zero, equals (a * b + 2^30) >> 31 (an arithmetic
 * shift) for every pair but INT32_MIN * INT32_MIN, where it saturates; as
 * CMSIS-NN, one multiply-accumulate long instead of branches on the sign.
 * The layers' multipliers are never negative (af_net_check), so their
 * products never saturate. */
static inline int32_t requantise(int32_t x, int32_t multiplier, int32_t shift) {
  const int32_t a = (int32_t)((uint32_t)x << (shift > 0 ? shift : 0));
  const int32_t high = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
  return divide_by_power_of_two(high, shift > 0 ? 0 : -shift);
}

int32_t af_net_requantise(int32_t x, int32_t multiplier, int32_t shift) {
  const int32_t a = (int32_t)((uint32_t)x << (shift > 0 ? shift : 0));
  if (a == INT32_MIN && multiplier == INT32_MIN)
    return divide_by_power_of_two(INT32_MAX, shift > 0 ? 0 : -shift);
  return requantise(x, multiplier, shift);
}

/* Offset of cell (y, x) of a (height, width, channels) tensor, channels last. */
static size_t at(int y, int x, int width, int channels) {
  return ((size_t)y * (size_t)width + (size_t)x) * (size_t)channels;
}

static int8_t clamp(int32_t v, int32_t low, int32_t high) {
  return (int8_t)(v < low ? low : v > high ? high : v);
}

/* A convolution's output value from its accumulator (bias plus the dot
 * product) for output channel c. */
static int8_t output(const af_net_layer* l, int c, int32_t sum) {
  return clamp(requantise(sum, l->multiplier[c], l->shift[c]) + l->out_zero_point, l->act_min,
               l->act_max);
}

/* A 2-D convolution runs as CMSIS-NN's does: the receptive field of an
 * output cell is copied once into a column of int16 (input less its zero
 * point, im2col), then two columns meet two filters at a time, so each
 * loaded weight word feeds four dual multiply-accumulates. Its scratch, in the
 * caller's arena: the field as int8 and two columns (CONV_2D only), then
 * the accumulators of two cells and their maximum (every convolution). */
static size_t field_size(const af_net_layer* l) {  /* kernel h x w x input channels, rounded to 4 */
  if (l->op != AF_NET_CONV_2D) return 0;
  return ((size_t)l->kernel[0] * (size_t)l->kernel[1] * (size_t)l->in[2] + 3u) & ~(size_t)3u;
}

static size_t conv_scratch_bytes(const af_net_layer* l) {
  if (l->op != AF_NET_CONV_2D && l->op != AF_NET_DEPTHWISE_CONV_2D) return 0;
  return 5 * field_size(l) + 3 * sizeof(int32_t) * (size_t)l->out[2];
}

/* The receptive field of cell (oy, ox) in the weights' order (kernel row,
 * column, input channel); a tap in the padding reads the zero point, which
 * contributes 0, as when it is skipped. */
static void gather(const af_net_layer* l, const int8_t* in, int oy, int ox, int8_t* field) {
  const int ih = l->in[0], iw = l->in[1], ic = l->in[2], kh = l->kernel[0], kw = l->kernel[1];
  const int y0 = oy * l->stride[0] - l->pad[0], x0 = ox * l->stride[1] - l->pad[1];
  const int kx_first = x0 < 0 ? -x0 : 0, kx_end = x0 + kw > iw ? iw - x0 : kw;
  const int8_t zero_point = (int8_t)l->in_zero_point;
  const int row = kw * ic, before = kx_first * ic;
  const int inside = kx_end > kx_first ? (kx_end - kx_first) * ic : 0;
  for (int ky = 0; ky < kh; ++ky, field += row) {
    const int y = y0 + ky;
    if (y < 0 || y >= ih || inside == 0) {
      memset(field, zero_point, (size_t)row);
      continue;
    }
    const int8_t* source = in + at(y, x0 + kx_first, iw, ic);
    if (row < 16) {  /* a first layer's few taps: one loop, cheaper than library calls */
      for (int k = 0; k < row; ++k) {
        const int j = k - before;
        field[k] = (unsigned)j < (unsigned)inside ? source[j] : zero_point;
      }
      continue;
    }
    memset(field, zero_point, (size_t)before);
    memcpy(field + before, source, (size_t)inside);
    memset(field + before + inside, zero_point, (size_t)(row - before - inside));
  }
}

/* Values the dot products read four at a time: all but the last n % 4 on
 * the DSP path, none on the portable one. */
static int grouped(int n) { return AF_NET_DSP ? n & ~3 : 0; }

/* Two cells' columns (field - zero point, n values each) in one buffer, in
 * the order dot_2x2 reads them: for each group of four values, the first
 * column's (0, 2) and (1, 3), the pairs SXTB16 makes of four weights, then
 * the second's; after the groups, each remaining value of both columns in
 * turn. This writes column ``which`` (0 or 1) of ``pair``. */
static void widen(const int8_t* field, int n, int32_t zero_point, int16_t* pair, int which) {
  const int groups = grouped(n);
  int i = 0;
#if AF_NET_DSP
  const uint32_t minus_zero_point = (uint32_t)(uint16_t)(int16_t)(-zero_point) * 0x00010001u;
  for (int16_t* out = pair + 4 * which; i < groups; i += 4, out += 8) {
    uint32_t v;
    memcpy(&v, field + i, 4);
    const uint32_t even = SADD16(SXTB16(v), minus_zero_point);
    const uint32_t odd = SADD16(SXTB16_ROR8(v), minus_zero_point);
    memcpy(out, &even, 4);
    memcpy(out + 2, &odd, 4);
  }
#endif
  for (int16_t* out = pair + 2 * groups + which; i < n; ++i, out += 2)
    *out = (int16_t)(field[i] - zero_point);
}

#if AF_NET_DSP
/* Four values of two columns (see widen) times four of two filters: each
 * loaded weight word feeds four dual multiply-accumulates. */
#define DOT_2X2_GROUP(pair, w0, w1)                     \
  do {                                                  \
    uint32_t x0e, x0o, x1e, x1o, v, even, odd;          \
    memcpy(&x0e, (pair), 4);                            \
    memcpy(&x0o, (pair) + 2, 4);                        \
    memcpy(&x1e, (pair) + 4, 4);                        \
    memcpy(&x1o, (pair) + 6, 4);                        \
    memcpy(&v, (w0), 4);                                \
    even = SXTB16(v);                                   \
    odd = SXTB16_ROR8(v);                               \
    a00 = SMLAD(x0o, odd, SMLAD(x0e, even, a00));       \
    a01 = SMLAD(x1o, odd, SMLAD(x1e, even, a01));       \
    memcpy(&v, (w1), 4);                                \
    even = SXTB16(v);                                   \
    odd = SXTB16_ROR8(v);                               \
    a10 = SMLAD(x0o, odd, SMLAD(x0e, even, a10));       \
    a11 = SMLAD(x1o, odd, SMLAD(x1e, even, a11));       \
  } while (0)
#endif

/* acc[2 f + c] += column c . filter f, for the two columns in ``pair`` (see
 * widen) and filters w0, w1 of n values. */
static inline void dot_2x2(const int16_t* pair, const int8_t* w0, const int8_t* w1, int n,
                           int32_t acc[4]) {
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
  int i = 0;
#if AF_NET_DSP
  for (const int groups = grouped(n); i < groups; i += 4, pair += 8)
    DOT_2X2_GROUP(pair, w0 + i, w1 + i);
#endif
  for (; i < n; ++i, pair += 2) {
    a00 += pair[0] * w0[i];
    a01 += pair[1] * w0[i];
    a10 += pair[0] * w1[i];
    a11 += pair[1] * w1[i];
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[2] = a10;
  acc[3] = a11;
}

/* The accumulators of cells (oy, ox) and, when ``two``, (oy, ox + 1) of
 * CONV_2D l, every output channel, into sums[0] and sums[1]. */
static void conv_sums(const af_net_layer* l, const int8_t* in, int oy, int ox, int two,
                      int8_t* scratch, int32_t* sums[2]) {
  /* Every field in a local: writes through int8_t* may alias anything, so
   * the compiler would reload them from the layer after each store. */
  const int n = l->kernel[0] * l->kernel[1] * l->in[2], oc_n = l->out[2];
  const int32_t zero_point = l->in_zero_point;
  const int8_t* const weights = l->weights;
  const int32_t* const bias = l->bias;
  int16_t* const pair = (int16_t*)(void*)(scratch + field_size(l));  /* 4-byte aligned */
  int32_t *const sum0 = sums[0], *const sum1 = two ? sums[1] : sums[0];
  gather(l, in, oy, ox, scratch);
  widen(scratch, n, zero_point, pair, 0);
  if (two) gather(l, in, oy, ox + 1, scratch);
  widen(scratch, n, zero_point, pair, 1);  /* one cell: the same column twice */
  const int8_t* w = weights;
  for (int oc = 0; oc < oc_n; oc += 2, w += 2 * n) {
    const int other = oc + 1 < oc_n ? oc + 1 : oc;  /* an odd last filter runs twice */
    const int32_t b0 = bias ? bias[oc] : 0, b1 = bias ? bias[other] : 0;
    int32_t acc[4] = {b0, b0, b1, b1};
    dot_2x2(pair, w, other == oc ? w : w + n, n, acc);
    sum0[oc] = acc[0];
    sum1[oc] = acc[1];
    sum0[other] = acc[2];
    sum1[other] = acc[3];
  }
}

/* The accumulators of cell (oy, ox) of DEPTHWISE_CONV_2D l (depth
 * multiplier 1): each output channel reads only its own input channel. */
static void depthwise_sums(const af_net_layer* l, const int8_t* in, int oy, int ox, int32_t* sum) {
  const int ih = l->in[0], iw = l->in[1], c = l->in[2], kh = l->kernel[0], kw = l->kernel[1];
  const int y0 = oy * l->stride[0] - l->pad[0], x0 = ox * l->stride[1] - l->pad[1];
  const int ky_first = y0 < 0 ? -y0 : 0, ky_end = y0 + kh > ih ? ih - y0 : kh;
  const int kx_first = x0 < 0 ? -x0 : 0, kx_end = x0 + kw > iw ? iw - x0 : kw;
  const int32_t zero_point = l->in_zero_point;
  for (int ch = 0; ch < c; ++ch) {
    int32_t acc = l->bias ? l->bias[ch] : 0;
    for (int ky = ky_first; ky < ky_end; ++ky)
      for (int kx = kx_first; kx < kx_end; ++kx)
        acc += (in[at(y0 + ky, x0 + kx, iw, c) + (size_t)ch] - zero_point) *
               l->weights[at(ky, kx, kw, c) + (size_t)ch];
    sum[ch] = acc;
  }
}

/* The accumulators of cells (oy, ox) and, when ``two``, (oy, ox + 1) of
 * convolution l. */
static void sums_of(const af_net_layer* l, const int8_t* in, int oy, int ox, int two,
                    int8_t* scratch, int32_t* sums[2]) {
  if (l->op == AF_NET_CONV_2D) {
    conv_sums(l, in, oy, ox, two, scratch, sums);
    return;
  }
  depthwise_sums(l, in, oy, ox, sums[0]);
  if (two) depthwise_sums(l, in, oy, ox + 1, sums[1]);
}

/* The two cells' accumulators and their maximum, after the field and
 * columns in the scratch. */
static void accumulators(const af_net_layer* l, int8_t* scratch, int32_t* sums[3]) {
  int32_t* const first = (int32_t*)(void*)(scratch + 5 * field_size(l));
  for (int k = 0; k < 3; ++k) sums[k] = first + k * l->out[2];
}

static void conv_2d(const af_net_layer* l, const int8_t* in, int8_t* out, int8_t* scratch) {
  const int ow = l->out[1], c = l->out[2];
  int32_t* sums[3];
  accumulators(l, scratch, sums);
  for (int oy = 0; oy < l->out[0]; ++oy)
    for (int ox = 0; ox < ow; ox += 2) {
      const int two = ox + 1 < ow;
      sums_of(l, in, oy, ox, two, scratch, sums);
      for (int j = 0; j <= two; ++j)
        for (int k = 0; k < c; ++k) out[at(oy, ox + j, ow, c) + (size_t)k] = output(l, k, sums[j][k]);
    }
}

/* Whether layers k and k + 1 run fused: a convolution, then a max pooling
 * without padding over its output (pipeline/c_network.py decides alike).
 * Each pooled cell is the maximum of the convolution cells under it,
 * computed as they are needed: the convolution's output never sits in the
 * arena (the largest tensor of our CNN). */
static int fused(const af_net* net, int k) {
  if (k + 1 >= net->n_layers) return 0;
  const af_net_layer* conv = &net->layers[k];
  const af_net_layer* pool = &net->layers[k + 1];
  return (conv->op == AF_NET_CONV_2D || conv->op == AF_NET_DEPTHWISE_CONV_2D) &&
         pool->op == AF_NET_MAX_POOL_2D && pool->pad[0] == 0 && pool->pad[1] == 0;
}

#if AF_NET_DSP
#define FIRST_LAYER_MAX_CELLS 16 /* a pooling window of up to 4 x 4 cells */

/* Whether conv (fused with pool) is the usual first layer: a 3 x 3
 * convolution of one input channel with a bias and no left shift, pooled
 * over at most FIRST_LAYER_MAX_CELLS cells; first_layer_pool runs it. */
static int is_first_layer(const af_net_layer* conv, const af_net_layer* pool) {
  if (conv->op != AF_NET_CONV_2D || conv->in[2] != 1 || conv->kernel[0] != 3 ||
      conv->kernel[1] != 3 || conv->bias == NULL ||
      pool->kernel[0] * pool->kernel[1] > FIRST_LAYER_MAX_CELLS)
    return 0;
  for (int k = 0; k < conv->out[2]; ++k)
    if (conv->shift[k] > 0) return 0;
  return 1;
}

/* The nine taps of cell (oy, ox), less the zero point (0 in the padding),
 * as the int16 pairs SMLAD takes against SXTB16-widened weights: (0, 2),
 * (1, 3), (4, 6), (5, 7), then tap 8 alone. */
static void pack_taps(const af_net_layer* l, const int8_t* in, int oy, int ox, uint32_t packed[5]) {
  const int ih = l->in[0], iw = l->in[1];
  const int y0 = oy * l->stride[0] - l->pad[0], x0 = ox * l->stride[1] - l->pad[1];
  const int32_t zero_point = l->in_zero_point;
  int32_t t[9];
  if (y0 >= 0 && y0 + 3 <= ih && x0 >= 0 && x0 + 3 <= iw) {  /* inside: no padding to test */
    const int8_t* const r = in + at(y0, x0, iw, 1);
    const size_t w = (size_t)iw;
    packed[0] = halves(r[0] - zero_point, r[2] - zero_point);
    packed[1] = halves(r[1] - zero_point, r[w] - zero_point);
    packed[2] = halves(r[w + 1] - zero_point, r[2 * w] - zero_point);
    packed[3] = halves(r[w + 2] - zero_point, r[2 * w + 1] - zero_point);
    packed[4] = (uint32_t)(r[2 * w + 2] - zero_point);
    return;
  }
  for (int ky = 0, k = 0; ky < 3; ++ky) {
    const int y = y0 + ky, row_inside = y >= 0 && y < ih;
    const int8_t* const row = in + at(row_inside ? y : 0, 0, iw, 1);
    for (int kx = 0; kx < 3; ++kx, ++k) {
      const int x = x0 + kx;
      t[k] = row_inside && (unsigned)x < (unsigned)iw ? row[x] - zero_point : 0;
    }
  }
  packed[0] = halves(t[0], t[2]);
  packed[1] = halves(t[1], t[3]);
  packed[2] = halves(t[4], t[6]);
  packed[3] = halves(t[5], t[7]);
  packed[4] = (uint32_t)t[8];
}

/* The first layer fused with its max pooling: the taps of a pooling
 * window's cells are packed once, each filter's weights widened once, and
 * every cell's accumulator and their maximum stay in registers (the
 * general path keeps the columns and the accumulators in the scratch: 3.5
 * times the instructions here). One requantisation per pooled value. */
static void first_layer_pool(const af_net_layer* conv, const af_net_layer* pool,
                             const int8_t* in, int8_t* out) {
  uint32_t packed[FIRST_LAYER_MAX_CELLS][5];
  const int c = conv->out[2], conv_h = conv->out[0], conv_w = conv->out[1];
  const int32_t out_zero_point = conv->out_zero_point;
  const int32_t conv_low = conv->act_min, conv_high = conv->act_max;
  const int32_t low = pool->act_min, high = pool->act_max;
  const int32_t *const bias = conv->bias, *const multiplier = conv->multiplier;
  const int32_t* const shift = conv->shift;
  for (int oy = 0; oy < pool->out[0]; ++oy)
    for (int ox = 0; ox < pool->out[1]; ++ox) {
      int cells = 0;
      for (int ky = 0; ky < pool->kernel[0]; ++ky) {
        const int y = oy * pool->stride[0] + ky;
        for (int kx = 0; kx < pool->kernel[1] && y < conv_h; ++kx) {
          const int x = ox * pool->stride[1] + kx;
          if (x < conv_w) pack_taps(conv, in, y, x, packed[cells++]);
        }
      }
      int8_t* const pooled = out + at(oy, ox, pool->out[1], c);
      const int8_t* w = conv->weights;
      for (int k = 0; k < c; ++k, w += 9) {
        uint32_t v0, v1;
        memcpy(&v0, w, 4);
        memcpy(&v1, w + 4, 4);
        const uint32_t e0 = SXTB16(v0), o0 = SXTB16_ROR8(v0), e1 = SXTB16(v1),
                       o1 = SXTB16_ROR8(v1);
        const int32_t w8 = w[8], b = bias[k];
        int32_t best = INT32_MIN;
        for (int j = 0; j < cells; ++j) {
          const uint32_t* const p = packed[j];
          int32_t acc = SMLAD(p[1], o0, SMLAD(p[0], e0, b));
          acc = SMLAD(p[3], o1, SMLAD(p[2], e1, acc)) + (int32_t)p[4] * w8;
          best = acc > best ? acc : best;
        }
        const int32_t v = clamp(requantise(best, multiplier[k], shift[k]) + out_zero_point,
                                conv_low, conv_high);
        pooled[k] = clamp(v, low, high);
      }
    }
}
#endif

/* Requantisation is monotonic (a multiplier is never negative, and a right
 * shift rounds monotonically), so the maximum of requantised cells is the
 * requantised maximum of their accumulators: one requantisation per pooled
 * value instead of one per cell. A channel with a left shift could wrap
 * (as TFLite's int32 does), so its cells are requantised one by one. */
static void conv_pool(const af_net_layer* conv, const af_net_layer* pool, const int8_t* in,
                      int8_t* out, int8_t* scratch) {
  const int c = conv->out[2], conv_h = conv->out[0], conv_w = conv->out[1];
  const int kh = pool->kernel[0], kw = pool->kernel[1];
  const int32_t low = pool->act_min, high = pool->act_max;
  const int32_t *const shift = conv->shift, *const multiplier = conv->multiplier;
  const int32_t out_zero_point = conv->out_zero_point;
  const int32_t conv_low = conv->act_min, conv_high = conv->act_max;
#if AF_NET_DSP
  if (is_first_layer(conv, pool)) {
    first_layer_pool(conv, pool, in, out);
    return;
  }
#endif
  int32_t* sums[3];
  accumulators(conv, scratch, sums);
  int32_t* const best = sums[2];
  int left_shifts = 0;
  for (int k = 0; k < c; ++k) left_shifts |= shift[k] > 0;
  for (int oy = 0; oy < pool->out[0]; ++oy)
    for (int ox = 0; ox < pool->out[1]; ++ox) {
      for (int k = 0; k < c; ++k) best[k] = INT32_MIN;
      for (int ky = 0; ky < kh; ++ky) {
        const int y = oy * pool->stride[0] + ky;
        if (y >= conv_h) continue;
        for (int kx = 0; kx < kw; kx += 2) {  /* the cells of a pooling row two at a time */
          const int x = ox * pool->stride[1] + kx;
          if (x >= conv_w) continue;
          const int two = kx + 1 < kw && x + 1 < conv_w;
          sums_of(conv, in, y, x, two, scratch, sums);
          for (int j = 0; j <= two; ++j) {
            const int32_t* const sum = sums[j];
            if (left_shifts) {
              for (int k = 0; k < c; ++k) {
                const int32_t v = shift[k] > 0 ? output(conv, k, sum[k]) : sum[k];
                best[k] = v > best[k] ? v : best[k];
              }
            } else {
              for (int k = 0; k < c; ++k) best[k] = sum[k] > best[k] ? sum[k] : best[k];
            }
          }
        }
      }
      int8_t* const pooled = out + at(oy, ox, pool->out[1], c);
      for (int k = 0; k < c; ++k) {
        const int32_t v = shift[k] > 0 ? best[k]
                          : clamp(requantise(best[k], multiplier[k], shift[k]) + out_zero_point,
                                  conv_low, conv_high);
        pooled[k] = clamp(v, low, high);
      }
    }
}

static void max_pool_2d(const af_net_layer* l, const int8_t* in, int8_t* out) {
  const int ih = l->in[0], iw = l->in[1], c = l->in[2], oh = l->out[0], ow = l->out[1];
  const int kh = l->kernel[0], kw = l->kernel[1], sy = l->stride[0], sx = l->stride[1];
  const int py = l->pad[0], px = l->pad[1];
  const int32_t low = l->act_min, high = l->act_max;  /* locals: see conv_2d */
  for (int oy = 0; oy < oh; ++oy) {
    const int y0 = oy * sy - py;
    const int ky_first = y0 < 0 ? -y0 : 0, ky_end = y0 + kh > ih ? ih - y0 : kh;
    for (int ox = 0; ox < ow; ++ox) {
      const int x0 = ox * sx - px;
      const int kx_first = x0 < 0 ? -x0 : 0, kx_end = x0 + kw > iw ? iw - x0 : kw;
      int8_t* const cell = out + at(oy, ox, ow, c);
      for (int ch = 0; ch < c; ++ch) {
        int32_t best = -128;
        for (int ky = ky_first; ky < ky_end; ++ky)
          for (int kx = kx_first; kx < kx_end; ++kx) {
            const int32_t v = in[at(y0 + ky, x0 + kx, iw, c) + (size_t)ch];
            if (v > best) best = v;
          }
        cell[ch] = clamp(best, low, high);
      }
    }
  }
}

/* The sum of each channel less the zero points, requantised by a multiplier
 * that includes the division by the number of cells (as TFLite Micro). */
static void mean(const af_net_layer* l, const int8_t* in, int8_t* out) {
  const int n = l->in[0] * l->in[1], c = l->in[2];
  for (int ch = 0; ch < c; ++ch) {
    int32_t acc = 0;
    for (int k = 0; k < n; ++k) acc += in[at(0, k, 0, c) + (size_t)ch] - l->in_zero_point;
    acc = requantise(acc, l->multiplier[0], l->shift[0]) + l->out_zero_point;
    out[ch] = clamp(acc, l->act_min, l->act_max);
  }
}

static void fully_connected(const af_net_layer* l, const int8_t* in, int8_t* out) {
  const int n_in = l->in[0] * l->in[1] * l->in[2];
  for (int o = 0; o < l->out[2]; ++o) {
    int32_t acc = l->bias ? l->bias[o] : 0;
    acc += dot(in, l->weights + at(0, o, 0, n_in), n_in, l->in_zero_point);
    acc = requantise(acc, l->multiplier[o], l->shift[o]) + l->out_zero_point;
    out[o] = clamp(acc, l->act_min, l->act_max);
  }
}

/* In single precision on the dequantised input, then quantised to the
 * output's scale (the tests compare it with TFLite Micro's fixed-point
 * softmax on every window). */
static void softmax(const af_net_layer* l, const int8_t* in, int8_t* out) {
  const int n = l->in[0] * l->in[1] * l->in[2];
  int32_t top = -128;
  for (int i = 0; i < n; ++i) top = in[i] > top ? in[i] : top;
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += expf(l->in_scale * (float)(in[i] - top));
  for (int i = 0; i < n; ++i) {
    const float p = expf(l->in_scale * (float)(in[i] - top)) / sum;
    out[i] = clamp((int32_t)lrintf(p / l->out_scale) + l->out_zero_point, -128, 127);
  }
}

static size_t tensor_size(const int dims[3]) {
  if (dims[0] < 1 || dims[1] < 1 || dims[2] < 1) return 0;
  return (size_t)dims[0] * (size_t)dims[1] * (size_t)dims[2];
}

/* Each step (a layer, or a convolution fused with its pooling) writes at
 * one end of the arena's tensor part while it reads what the step before
 * wrote at the other end (the first reads the caller's input, the last
 * writes the caller's output): that part holds the largest such pair. The
 * convolutions' scratch follows it, 4-byte aligned. */
static size_t tensor_bytes(const af_net* net) {
  size_t largest = 0, previous = 0;
  for (int k = 0; k < net->n_layers; ++k) {
    if (fused(net, k)) ++k;  /* the step's output is the pooling's */
    if (k == net->n_layers - 1) break;  /* the caller's output */
    const size_t size = tensor_size(net->layers[k].out);
    largest = previous + size > largest ? previous + size : largest;
    previous = size;
  }
  return (largest + 3u) & ~(size_t)3u;
}

size_t af_net_arena_bytes(const af_net* net) {
  if (net == NULL || net->layers == NULL || net->n_layers < 1) return 0;
  size_t scratch = 0;
  for (int k = 0; k < net->n_layers; ++k) {
    const size_t bytes = conv_scratch_bytes(&net->layers[k]);
    scratch = bytes > scratch ? bytes : scratch;
  }
  return tensor_bytes(net) + scratch;
}

/* A layer that requantises has its multipliers and shifts (one per output
 * channel; MEAN: one), each as TFLite makes them: a multiplier in
 * [0, 2^31) and a shift in [-31, 30]; one with weights has them. */
static int requantisation_ok(const af_net_layer* l) {
  const int weighted = l->op == AF_NET_CONV_2D || l->op == AF_NET_DEPTHWISE_CONV_2D ||
                       l->op == AF_NET_FULLY_CONNECTED;
  if (!weighted && l->op != AF_NET_MEAN) return 1;
  if (l->multiplier == NULL || l->shift == NULL || (weighted && l->weights == NULL)) return 0;
  for (int c = 0; c < (weighted ? l->out[2] : 1); ++c)
    if (l->multiplier[c] < 0 || l->shift[c] < -31 || l->shift[c] > 30) return 0;
  return 1;
}

int af_net_check(const af_net* net, size_t input_size, size_t output_size) {
  if (net == NULL || net->layers == NULL) return AF_ERR_NULL;
  if (net->n_layers < 1) return AF_ERR_ARGUMENT;
  /* The layers are data from a generated header: check that they chain
   * before any of them reads or writes memory. */
  size_t flowing = input_size;
  for (int k = 0; k < net->n_layers; ++k) {
    const af_net_layer* l = &net->layers[k];
    const size_t in_size = tensor_size(l->in), out_size = tensor_size(l->out);
    if (in_size == 0 || out_size == 0 || in_size != flowing ||
        (unsigned)l->op > (unsigned)AF_NET_DEPTHWISE_CONV_2D || !requantisation_ok(l))
      return AF_ERR_ARGUMENT;
    flowing = out_size;
  }
  return flowing == output_size ? AF_OK : AF_ERR_ARGUMENT;
}

int af_net_run(const af_net* net, const int8_t* input, size_t input_size, int8_t* output,
               size_t output_size, void* arena, size_t arena_bytes) {
  if (input == NULL || output == NULL || arena == NULL) return AF_ERR_NULL;
  const int status = af_net_check(net, input_size, output_size);
  if (status != AF_OK) return status;
  const size_t needed = af_net_arena_bytes(net);
  if (arena_bytes < needed) return AF_ERR_BUFFER;
  const size_t tensors = tensor_bytes(net);
  int8_t* const scratch = (int8_t*)arena + tensors;
  const int8_t* in = input;
  for (int k = 0, step = 0; k < net->n_layers; ++k, ++step) {
    const af_net_layer* l = &net->layers[k];
    const int pair = fused(net, k);
    const af_net_layer* last = pair ? &net->layers[k + 1] : l;
    int8_t* out = k + pair == net->n_layers - 1 ? output
                  : step % 2 == 0 ? (int8_t*)arena  /* the start, then the end, in turn */
                  : (int8_t*)arena + tensors - tensor_size(last->out);
    if (pair) {
      conv_pool(l, last, in, out, scratch);
      ++k;
    } else {
      switch (l->op) {
        case AF_NET_CONV_2D:
        case AF_NET_DEPTHWISE_CONV_2D: conv_2d(l, in, out, scratch); break;
        case AF_NET_MAX_POOL_2D: max_pool_2d(l, in, out); break;
        case AF_NET_MEAN: mean(l, in, out); break;
        case AF_NET_FULLY_CONNECTED: fully_connected(l, in, out); break;
        case AF_NET_SOFTMAX: softmax(l, in, out); break;
      }
    }
    in = out;
  }
  return AF_OK;
}
