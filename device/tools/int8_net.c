/* See int8_net.h. The integer arithmetic follows TensorFlow Lite Micro's
 * reference kernels (gemmlowp's saturating rounding doubling high multiply,
 * then a rounding right shift), so the outputs match its outputs. */
#include "int8_net.h"

#include <math.h>

static int32_t rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t net_requantise(int32_t x, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(rounding_doubling_high_mul(x * (1 << left), multiplier), right);
}

static int8_t clamp(int32_t v, int32_t low, int32_t high) {
  return (int8_t)(v < low ? low : v > high ? high : v);
}

/* A 2-D convolution; ``depthwise``: one filter per channel (depth multiplier
 * 1), each output channel reading only its own input channel. */
static void conv_2d(const net_layer* l, const int8_t* in, int8_t* out, int depthwise) {
  const int ih = l->in[0], iw = l->in[1], ic = l->in[2];
  const int kh = l->kernel[0], kw = l->kernel[1];
  for (int oy = 0; oy < l->out[0]; ++oy)
    for (int ox = 0; ox < l->out[1]; ++ox)
      for (int oc = 0; oc < l->out[2]; ++oc) {
        int32_t acc = l->bias ? l->bias[oc] : 0;
        for (int ky = 0; ky < kh; ++ky) {
          const int y = oy * l->stride[0] - l->pad[0] + ky;
          if (y < 0 || y >= ih) continue;
          for (int kx = 0; kx < kw; ++kx) {
            const int x = ox * l->stride[1] - l->pad[1] + kx;
            if (x < 0 || x >= iw) continue;
            const int8_t* pixel = in + ((size_t)y * iw + x) * ic;
            if (depthwise) {
              acc += (pixel[oc] - l->in_zero_point) * l->weights[((size_t)ky * kw + kx) * ic + oc];
              continue;
            }
            const int8_t* w = l->weights + (((size_t)oc * kh + ky) * kw + kx) * ic;
            for (int c = 0; c < ic; ++c) acc += (pixel[c] - l->in_zero_point) * w[c];
          }
        }
        acc = net_requantise(acc, l->multiplier[oc], l->shift[oc]) + l->out_zero_point;
        out[((size_t)oy * l->out[1] + ox) * l->out[2] + oc] = clamp(acc, l->act_min, l->act_max);
      }
}

static void max_pool_2d(const net_layer* l, const int8_t* in, int8_t* out) {
  const int ih = l->in[0], iw = l->in[1], c = l->in[2];
  for (int oy = 0; oy < l->out[0]; ++oy)
    for (int ox = 0; ox < l->out[1]; ++ox)
      for (int ch = 0; ch < c; ++ch) {
        int32_t best = -128;
        for (int ky = 0; ky < l->kernel[0]; ++ky) {
          const int y = oy * l->stride[0] - l->pad[0] + ky;
          if (y < 0 || y >= ih) continue;
          for (int kx = 0; kx < l->kernel[1]; ++kx) {
            const int x = ox * l->stride[1] - l->pad[1] + kx;
            if (x < 0 || x >= iw) continue;
            const int32_t v = in[((size_t)y * iw + x) * c + ch];
            if (v > best) best = v;
          }
        }
        out[((size_t)oy * l->out[1] + ox) * c + ch] = clamp(best, l->act_min, l->act_max);
      }
}

/* The sum of each channel less the zero points, requantised by a multiplier
 * that includes the division by the number of cells (as TFLite Micro). */
static void mean(const net_layer* l, const int8_t* in, int8_t* out) {
  const int n = l->in[0] * l->in[1], c = l->in[2];
  for (int ch = 0; ch < c; ++ch) {
    int32_t acc = 0;
    for (int k = 0; k < n; ++k) acc += in[(size_t)k * c + ch] - l->in_zero_point;
    acc = net_requantise(acc, l->multiplier[0], l->shift[0]) + l->out_zero_point;
    out[ch] = clamp(acc, l->act_min, l->act_max);
  }
}

static void fully_connected(const net_layer* l, const int8_t* in, int8_t* out) {
  const int n_in = l->in[0] * l->in[1] * l->in[2];
  for (int o = 0; o < l->out[2]; ++o) {
    int32_t acc = l->bias ? l->bias[o] : 0;
    const int8_t* w = l->weights + (size_t)o * n_in;
    for (int i = 0; i < n_in; ++i) acc += (in[i] - l->in_zero_point) * w[i];
    acc = net_requantise(acc, l->multiplier[o], l->shift[o]) + l->out_zero_point;
    out[o] = clamp(acc, l->act_min, l->act_max);
  }
}

/* In floating point on the dequantised input (the host tool only), then
 * quantised to the output's scale: within one step of TFLite's fixed-point
 * softmax. */
static void softmax(const net_layer* l, const int8_t* in, int8_t* out) {
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

int net_run(const net_layer* layers, int n_layers, const int8_t* input, size_t input_size,
            int8_t* output, size_t output_size, int8_t* buffer_a, int8_t* buffer_b,
            size_t buffer_bytes) {
  if (layers == NULL || n_layers < 1 || input == NULL || output == NULL || buffer_a == NULL ||
      buffer_b == NULL)
    return NET_ERR_ARGUMENT;
  /* The layers are data from a generated header: check that they chain
   * before any of them reads or writes memory. */
  size_t flowing = input_size;
  for (int k = 0; k < n_layers; ++k) {
    const size_t in_size = tensor_size(layers[k].in), out_size = tensor_size(layers[k].out);
    if (in_size == 0 || out_size == 0 || in_size != flowing) return NET_ERR_ARGUMENT;
    if (k < n_layers - 1 && out_size > buffer_bytes) return NET_ERR_BUFFER;
    flowing = out_size;
  }
  if (flowing != output_size) return NET_ERR_ARGUMENT;
  const int8_t* in = input;
  for (int k = 0; k < n_layers; ++k) {
    const net_layer* l = &layers[k];
    int8_t* out = k == n_layers - 1 ? output : (k % 2 == 0 ? buffer_a : buffer_b);
    switch (l->op) {
      case NET_CONV_2D: conv_2d(l, in, out, 0); break;
      case NET_DEPTHWISE_CONV_2D: conv_2d(l, in, out, 1); break;
      case NET_MAX_POOL_2D: max_pool_2d(l, in, out); break;
      case NET_MEAN: mean(l, in, out); break;
      case NET_FULLY_CONNECTED: fully_connected(l, in, out); break;
      case NET_SOFTMAX: softmax(l, in, out); break;
      default: return NET_ERR_ARGUMENT;
    }
    in = out;
  }
  return NET_OK;
}
