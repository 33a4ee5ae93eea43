/* The int8 network in C: the operations our models use (2-D and depthwise
 * convolution, max pooling, mean over height and width, fully connected,
 * softmax), with TensorFlow Lite Micro's integer arithmetic, so its int8
 * output equals TFLite Micro's. The layers come from model_16k_net.h, which
 * model_conv.py generates from the int8 .tflite (af_model_net).
 *
 * C99, no heap: the caller owns an arena of MODEL_NET_ARENA_BYTES (the
 * generated header; af_net_arena_bytes computes it), which holds the
 * intermediate tensors and the convolutions' scratch (im2col columns and
 * accumulators). Tensors are height x width x channels, channels
 * last. On a Cortex-M4 (and any core with the DSP extension,
 * __ARM_FEATURE_DSP) convolutions and fully connected layers multiply two
 * int16 pairs per instruction (__smlad on operands widened by __sxtb16, as
 * CMSIS-NN does); elsewhere portable C gives the same integers. Define
 * AF_NET_PORTABLE to force the portable code. */
#ifndef AF_NET_H_
#define AF_NET_H_

#include <stddef.h>
#include <stdint.h>

#include "af_frontend.h" /* the error codes */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  AF_NET_CONV_2D,
  AF_NET_MAX_POOL_2D,
  AF_NET_MEAN,
  AF_NET_FULLY_CONNECTED,
  AF_NET_SOFTMAX,
  AF_NET_DEPTHWISE_CONV_2D
} af_net_op;

typedef struct {
  af_net_op op;
  int in[3];      /* height, width, channels */
  int out[3];
  int kernel[2];  /* height, width */
  int stride[2];
  int pad[2];     /* leading padding (TFLite's SAME), height and width */
  int32_t in_zero_point, out_zero_point;
  int32_t act_min, act_max;   /* the fused activation's int8 clamp */
  float in_scale, out_scale;  /* softmax works on the dequantised input */
  const int8_t* weights;      /* [out channels][kernel h][kernel w][in channels];
                               * depthwise: [kernel h][kernel w][channels] */
  const int32_t* bias;        /* per output channel */
  const int32_t* multiplier;  /* Q31 requantisation per output channel (MEAN: one) */
  const int32_t* shift;
} af_net_layer;

typedef struct {
  const af_net_layer* layers;
  int n_layers;
} af_net;

/* Bytes of arena af_net_run needs for ``net``: the largest pair of
 * intermediate tensors one step reads and writes, then the largest
 * convolution's scratch. 0 for NULL or no layers. */
size_t af_net_arena_bytes(const af_net* net);

/* Check ``net`` once, before any run: the first layer reads ``input_size``
 * values, each reads what the one before wrote, the last writes
 * ``output_size``, every operation is known, every layer that requantises
 * has its multipliers (none negative) and shifts (-31 to 30). AF_OK,
 * AF_ERR_NULL or AF_ERR_ARGUMENT. */
int af_net_check(const af_net* net, size_t input_size, size_t output_size);

/* Run ``net`` on ``input`` (``input_size`` values) into ``output`` (room
 * for ``output_size``), with the caller's ``arena`` (``arena_bytes``, at
 * least af_net_arena_bytes(net)). Checks as af_net_check before anything
 * is read or written; AF_ERR_BUFFER when the arena is too small. */
int af_net_run(const af_net* net, const int8_t* input, size_t input_size, int8_t* output,
               size_t output_size, void* arena, size_t arena_bytes);

/* TensorFlow Lite's MultiplyByQuantizedMultiplier: round(x * m * 2^(shift - 31))
 * with its two roundings. */
int32_t af_net_requantise(int32_t x, int32_t multiplier, int32_t shift);

#ifdef __cplusplus
}
#endif

#endif /* AF_NET_H_ */
