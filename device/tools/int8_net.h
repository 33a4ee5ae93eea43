/* A small int8 interpreter for the host tool: the operations our models
 * use (2-D and depthwise convolution, max pooling, mean over height and
 * width, fully connected, softmax), with TensorFlow Lite's integer
 * arithmetic. The layers come from model_16k_net.h, which model_conv.py
 * generates from the .tflite.
 * Tensors are height x width x channels, channels last. On a board,
 * TensorFlow Lite Micro runs the .tflite instead. */
#ifndef INT8_NET_H_
#define INT8_NET_H_

#include <stddef.h>
#include <stdint.h>

typedef enum {
  NET_CONV_2D,
  NET_MAX_POOL_2D,
  NET_MEAN,
  NET_FULLY_CONNECTED,
  NET_SOFTMAX,
  NET_DEPTHWISE_CONV_2D
} net_op;

typedef struct {
  net_op op;
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
} net_layer;

enum { NET_OK = 0, NET_ERR_ARGUMENT = -1, NET_ERR_BUFFER = -2 };

/* Run ``n_layers`` layers on ``input`` (``input_size`` values) into
 * ``output`` (room for ``output_size``), using two caller-owned buffers of
 * ``buffer_bytes`` each (the largest tensor). Before anything runs, every
 * layer is checked: the first reads ``input_size`` values, each reads what
 * the one before wrote, the last writes ``output_size``; else
 * NET_ERR_ARGUMENT. NET_ERR_BUFFER when the buffers are too small. */
int net_run(const net_layer* layers, int n_layers, const int8_t* input, size_t input_size,
            int8_t* output, size_t output_size, int8_t* buffer_a, int8_t* buffer_b,
            size_t buffer_bytes);

/* TensorFlow Lite's MultiplyByQuantizedMultiplier: round(x * m * 2^(shift - 31))
 * with its two roundings. */
int32_t net_requantise(int32_t x, int32_t multiplier, int32_t shift);

#endif /* INT8_NET_H_ */
