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

/* The dot products of x with two filters at once (acc[0] with w0, acc[1]
 * with w1): each input word is loaded and widened once for both, as
 * CMSIS-NN's kernels share their loads. */
static void dot2(const int8_t* x, const int8_t* w0, const int8_t* w1, int n, int32_t zero_point,
                 int32_t acc[2]) {
  int32_t a = acc[0], b = acc[1];
  int i = 0;
#if AF_NET_DSP
  const uint32_t minus_zero_point = (uint32_t)(uint16_t)(int16_t)(-zero_point) * 0x00010001u;
  for (; i + 4 <= n; i += 4) {
    uint32_t xv, v0, v1;
    memcpy(&xv, x + i, 4);
    memcpy(&v0, w0 + i, 4);
    memcpy(&v1, w1 + i, 4);
    const uint32_t x02 = SADD16(SXTB16(xv), minus_zero_point);
    const uint32_t x13 = SADD16(SXTB16_ROR8(xv), minus_zero_point);
    a = SMLAD(x02, SXTB16(v0), a);
    a = SMLAD(x13, SXTB16_ROR8(v0), a);
    b = SMLAD(x02, SXTB16(v1), b);
    b = SMLAD(x13, SXTB16_ROR8(v1), b);
  }
#endif
  for (; i < n; ++i) {
    const int32_t v = x[i] - zero_point;
    a += v * w0[i];
    b += v * w1[i];
  }
  acc[0] = a;
  acc[1] = b;
}

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

static int32_t rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  const int64_t v = ab + nudge;  /* divided by 2^31 toward zero, without a 64-bit division */
  return (int32_t)(v >= 0 ? v >> 31 : -((-v) >> 31));
}

static int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t requantise(int32_t x, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(rounding_doubling_high_mul(x * (1 << left), multiplier), right);
}

int32_t af_net_requantise(int32_t x, int32_t multiplier, int32_t shift) {
  return requantise(x, multiplier, shift);
}

#define AF_NET_MAX_FUSED_CHANNELS 256 /* a convolution fused with its pooling: channels */
#define MAX_SINGLE_CHANNEL_TAPS 25 /* a first layer's kernel read once per pixel: up to 5 x 5 */

/* Offset of cell (y, x) of a (height, width, channels) tensor, channels last. */
static size_t at(int y, int x, int width, int channels) {
  return ((size_t)y * (size_t)width + (size_t)x) * (size_t)channels;
}

static int8_t clamp(int32_t v, int32_t low, int32_t high) {
  return (int8_t)(v < low ? low : v > high ? high : v);
}

/* One output cell (oy, ox) of a 2-D convolution, every channel, into
 * ``cell``; DEPTHWISE_CONV_2D: one filter per channel (depth multiplier 1),
 * each output channel reading only its own input channel. */
static void conv_cell(const af_net_layer* l, const int8_t* in, int oy, int ox, int8_t* cell) {
  const int depthwise = l->op == AF_NET_DEPTHWISE_CONV_2D;
  /* Every field in a local: writes through int8_t* may alias anything, so
   * the compiler would reload them from the layer after each store. */
  const int ih = l->in[0], iw = l->in[1], ic = l->in[2];
  const int oc_n = l->out[2];
  const int kh = l->kernel[0], kw = l->kernel[1];
  const int sy = l->stride[0], sx = l->stride[1], py = l->pad[0], px = l->pad[1];
  const int32_t zero_point = l->in_zero_point, out_zero_point = l->out_zero_point;
  const int32_t low = l->act_min, high = l->act_max;
  const int8_t* const weights = l->weights;
  const int32_t* const bias = l->bias;
  const int32_t* const multiplier = l->multiplier;
  const int32_t* const shift = l->shift;
  {
    const int y0 = oy * sy - py;
    const int ky_first = y0 < 0 ? -y0 : 0, ky_end = y0 + kh > ih ? ih - y0 : kh;
    {
      const int x0 = ox * sx - px;
      const int kx_first = x0 < 0 ? -x0 : 0, kx_end = x0 + kw > iw ? iw - x0 : kw;
      const size_t taps = (size_t)(kx_end - kx_first) * (size_t)ic;  /* a row, contiguous */
      int oc = 0;
      if (!depthwise && ic == 1 && kh * kw <= MAX_SINGLE_CHANNEL_TAPS) {
        /* the first layer: its few taps read once for all the filters (a
         * tap in the padding contributes 0, as when it is skipped) */
        int32_t taps_of[MAX_SINGLE_CHANNEL_TAPS];
        for (int ky = 0; ky < kh; ++ky)
          for (int kx = 0; kx < kw; ++kx)
            taps_of[ky * kw + kx] = ky >= ky_first && ky < ky_end && kx >= kx_first && kx < kx_end
                                        ? in[at(y0 + ky, x0 + kx, iw, 1)] - zero_point : 0;
        const int n_taps = kh * kw;
#if AF_NET_DSP
        /* the taps as int16 pairs in the order SXTB16 widens four weights:
         * (0, 2) and (1, 3) of each group of four */
        uint32_t even[MAX_SINGLE_CHANNEL_TAPS / 4 + 1], odd[MAX_SINGLE_CHANNEL_TAPS / 4 + 1];
        const int groups = n_taps / 4;
        for (int g = 0; g < groups; ++g) {
          even[g] = halves(taps_of[4 * g], taps_of[4 * g + 2]);
          odd[g] = halves(taps_of[4 * g + 1], taps_of[4 * g + 3]);
        }
#endif
        for (; oc < oc_n; ++oc) {
          const int8_t* w = weights + at(0, oc, 0, n_taps);
          int32_t acc = bias ? bias[oc] : 0;
          int t = 0;
#if AF_NET_DSP
          for (int g = 0; g < groups; ++g, t += 4) {
            uint32_t wv;
            memcpy(&wv, w + t, 4);
            acc = SMLAD(even[g], SXTB16(wv), acc);
            acc = SMLAD(odd[g], SXTB16_ROR8(wv), acc);
          }
#endif
          for (; t < n_taps; ++t) acc += taps_of[t] * w[t];
          cell[oc] = clamp(requantise(acc, multiplier[oc], shift[oc]) + out_zero_point,
                           low, high);
        }
      }
      if (!depthwise && ic > 1) {  /* two filters at a time, sharing the input's loads */
        for (; oc + 2 <= oc_n; oc += 2) {
          int32_t acc[2] = {bias ? bias[oc] : 0, bias ? bias[oc + 1] : 0};
          for (int ky = ky_first; ky < ky_end; ++ky) {
            const int8_t* row = in + at(y0 + ky, x0 + kx_first, iw, ic);
            const int8_t* w = weights + at(oc * kh + ky, kx_first, kw, ic);
            dot2(row, w, w + at(kh, 0, kw, ic), (int)taps, zero_point, acc);
          }
          for (int k = 0; k < 2; ++k)
            cell[oc + k] = clamp(requantise(acc[k], multiplier[oc + k], shift[oc + k]) +
                                     out_zero_point, low, high);
        }
      }
      for (; oc < oc_n; ++oc) {
        int32_t acc = bias ? bias[oc] : 0;
        for (int ky = ky_first; ky < ky_end; ++ky) {
          const int8_t* row = in + at(y0 + ky, x0, iw, ic);
          if (depthwise) {
            for (int kx = kx_first; kx < kx_end; ++kx)
              acc += (row[at(0, kx, 0, ic) + (size_t)oc] - zero_point) *
                     weights[at(ky, kx, kw, ic) + (size_t)oc];
          } else if (ic == 1) {  /* the first layer: a few taps per row, no call */
            const int8_t* w = weights + at(oc * kh + ky, 0, kw, 1);
            for (int kx = kx_first; kx < kx_end; ++kx) acc += (row[kx] - zero_point) * w[kx];
          } else {
            acc += dot(row + at(0, kx_first, 0, ic),
                       weights + at(oc * kh + ky, kx_first, kw, ic), (int)taps, zero_point);
          }
        }
        acc = requantise(acc, multiplier[oc], shift[oc]) + out_zero_point;
        cell[oc] = clamp(acc, low, high);
      }
    }
  }
}

static void conv_2d(const af_net_layer* l, const int8_t* in, int8_t* out) {
  for (int oy = 0; oy < l->out[0]; ++oy)
    for (int ox = 0; ox < l->out[1]; ++ox)
      conv_cell(l, in, oy, ox, out + at(oy, ox, l->out[1], l->out[2]));
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
         pool->op == AF_NET_MAX_POOL_2D && pool->pad[0] == 0 && pool->pad[1] == 0 &&
         conv->out[2] >= 1 && conv->out[2] <= AF_NET_MAX_FUSED_CHANNELS;
}

static void conv_pool(const af_net_layer* conv, const af_net_layer* pool, const int8_t* in,
                      int8_t* out) {
  int8_t cell[AF_NET_MAX_FUSED_CHANNELS];
  int32_t best[AF_NET_MAX_FUSED_CHANNELS];
  const int c = conv->out[2], conv_h = conv->out[0], conv_w = conv->out[1];
  const int32_t low = pool->act_min, high = pool->act_max;
  for (int oy = 0; oy < pool->out[0]; ++oy)
    for (int ox = 0; ox < pool->out[1]; ++ox) {
      for (int k = 0; k < c; ++k) best[k] = -128;
      for (int ky = 0; ky < pool->kernel[0]; ++ky) {
        const int y = oy * pool->stride[0] + ky;
        if (y >= conv_h) continue;
        for (int kx = 0; kx < pool->kernel[1]; ++kx) {
          const int x = ox * pool->stride[1] + kx;
          if (x >= conv_w) continue;
          conv_cell(conv, in, y, x, cell);
          for (int k = 0; k < c; ++k) best[k] = cell[k] > best[k] ? cell[k] : best[k];
        }
      }
      int8_t* const pooled = out + at(oy, ox, pool->out[1], c);
      for (int k = 0; k < c; ++k) pooled[k] = clamp(best[k], low, high);
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
 * one end of the arena while it reads what the step before wrote at the
 * other end (the first reads the caller's input, the last writes the
 * caller's output): the arena holds the largest such pair. */
size_t af_net_arena_bytes(const af_net* net) {
  if (net == NULL || net->layers == NULL || net->n_layers < 1) return 0;
  size_t largest = 0, previous = 0;
  for (int k = 0; k < net->n_layers; ++k) {
    if (fused(net, k)) ++k;  /* the step's output is the pooling's */
    if (k == net->n_layers - 1) break;  /* the caller's output */
    const size_t size = tensor_size(net->layers[k].out);
    largest = previous + size > largest ? previous + size : largest;
    previous = size;
  }
  return largest;
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
        (unsigned)l->op > (unsigned)AF_NET_DEPTHWISE_CONV_2D)
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
  const int8_t* in = input;
  for (int k = 0, step = 0; k < net->n_layers; ++k, ++step) {
    const af_net_layer* l = &net->layers[k];
    const int pair = fused(net, k);
    const af_net_layer* last = pair ? &net->layers[k + 1] : l;
    int8_t* out = k + pair == net->n_layers - 1 ? output
                  : step % 2 == 0 ? (int8_t*)arena  /* the start, then the end, in turn */
                  : (int8_t*)arena + needed - tensor_size(last->out);
    if (pair) {
      conv_pool(l, last, in, out);
      ++k;
    } else {
      switch (l->op) {
        case AF_NET_CONV_2D:
        case AF_NET_DEPTHWISE_CONV_2D: conv_2d(l, in, out); break;
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
