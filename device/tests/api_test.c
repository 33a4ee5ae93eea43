/* Bad input to the C API gives documented error codes, never a crash or a
 * NaN; compiled and run by tests/test_device.py against a generated model
 * header. Prints one line per check and exits 1 if any failed.
 *   api_test          the checks
 *   api_test rfft N   read N floats from stdin, print af_rfft's packed output
 *   api_test probs T SCALE ZERO_POINT Q...   print af_output_probabilities
 *   api_test decide MIN_P BACKGROUND P...    print af_decide */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "af_events.h"
#include "af_frontend.h"
#include "af_net.h"
#include "af_rfft.h"
#include "model_16k_frontend.h"

static int failures = 0;

static void expect(const char* what, int got, int want) {
  printf("%s: %s (got %d, want %d)\n", got == want ? "ok" : "FAIL", what, got, want);
  if (got != want) failures++;
}

static uint64_t scratch[(AF_MODEL_SCRATCH_BYTES + 7) / 8];
static uint64_t roomy_scratch[(AF_MODEL_SCRATCH_BYTES + 15) / 8];  /* room to misalign it */
static int16_t audio[AF_MODEL_WINDOW_SAMPLES];
static int16_t ring[AF_MODEL_WINDOW_SAMPLES];
static uint64_t stream_memory[(AF_MODEL_STREAM_BYTES + 15) / 8];  /* room to misalign it */
static float features[AF_MODEL_N_FEATURES];
static int8_t input[AF_MODEL_N_FEATURES];

/* Every class in a run, then a window with too little room for the events
 * it ends: the events wait, and come out of the next call with room. */
static void check_events_are_never_lost(void) {
  enum { N = AF_MODEL_NUM_LABELS };
  float thresholds[N], high[N], low[N];
  uint8_t background[N];
  for (int c = 0; c < N; ++c) {
    thresholds[c] = 0.5f;
    background[c] = 0;
    high[c] = 1.0f;
    low[c] = 0.0f;
  }
  af_event_config config = af_model_events;
  config.thresholds = thresholds;
  config.background = background;
  config.smooth_windows = 1;
  config.min_event = 0;
  af_events e;
  af_event out[N];
  size_t n = 0;
  expect("events: init", af_events_init(&e, &config), AF_OK);
  expect("events: run starts", af_events_push(&e, high, 1, out, N, &n), AF_OK);
  expect("events: window ending every run, no room", af_events_push(&e, low, 3, out, 0, &n), AF_ERR_BUFFER);
  expect("events: the room it needs", (int)n, N);
  expect("events: the same window with room", af_events_push(&e, low, 3, out, N, &n), AF_OK);
  expect("events: every class's event came out", (int)n, N);
  expect("events: another run", af_events_push(&e, high, 5, out, N, &n), AF_OK);
  expect("events: finish without room", af_events_finish(&e, out, 1, &n), N > 1 ? AF_ERR_BUFFER : AF_OK);
  expect("events: finish says how much room", (int)n, N);
  expect("events: finish with room", af_events_finish(&e, out, N, &n), AF_OK);
  expect("events: the open runs came out", (int)n, N);
}

/* A hand-made two-layer network (fully connected 8 -> 4 -> 2) and the
 * integers it must give; then every bad call gets its error code. */
static void check_network(void) {
  static const int8_t w1[4 * 8] = {1, -2, 3, -4, 5, -6, 7, -8, 8, 7, 6, 5, 4, 3, 2, 1,
                                   -1, -1, -1, -1, 1, 1, 1, 1, 0, 0, 0, 0, 127, -128, 0, 0};
  static const int8_t w2[2 * 4] = {1, 2, 3, 4, -4, -3, -2, -1};
  static const int32_t b1[4] = {10, -10, 0, 5}, b2[2] = {0, 3};
  static const int32_t m[4] = {1 << 30, 1 << 30, 1 << 30, 1 << 30}, sh[4] = {0, 0, 0, 0};
  const af_net_layer layers[2] = {
      {AF_NET_FULLY_CONNECTED, {1, 1, 8}, {1, 1, 4}, {1, 1}, {1, 1}, {0, 0}, 3, -1, -128, 127,
       1.0f, 1.0f, w1, b1, m, sh},
      {AF_NET_FULLY_CONNECTED, {1, 1, 4}, {1, 1, 2}, {1, 1}, {1, 1}, {0, 0}, -1, 2, -128, 127,
       1.0f, 1.0f, w2, b2, m, sh}};
  const af_net net = {layers, 2};
  const int8_t x[8] = {3, 4, 5, 6, 7, 8, 9, 10};
  int8_t y[2], arena[8];
  /* layer 1: acc = b + sum (x - 3) w; out = round(acc / 2) - 1 (multiplier 2^30 halves) */
  int8_t hidden[4], want[2];
  for (int o = 0; o < 4; ++o) {
    int32_t acc = b1[o];
    for (int i = 0; i < 8; ++i) acc += (x[i] - 3) * w1[o * 8 + i];
    hidden[o] = (int8_t)(af_net_requantise(acc, m[o], sh[o]) - 1);
  }
  for (int o = 0; o < 2; ++o) {
    int32_t acc = b2[o];
    for (int i = 0; i < 4; ++i) acc += (hidden[i] + 1) * w2[o * 4 + i];
    want[o] = (int8_t)(af_net_requantise(acc, m[o], sh[o]) + 2);
  }
  expect("net: arena bytes (the hidden layer only)", (int)af_net_arena_bytes(&net), 4);
  expect("net: run", af_net_run(&net, x, 8, y, 2, arena, sizeof arena), AF_OK);
  expect("net: output 0", y[0], want[0]);
  expect("net: output 1", y[1], want[1]);
  expect("net: NULL net", af_net_run(NULL, x, 8, y, 2, arena, sizeof arena), AF_ERR_NULL);
  expect("net: NULL arena", af_net_run(&net, x, 8, y, 2, NULL, sizeof arena), AF_ERR_NULL);
  expect("net: wrong input size", af_net_run(&net, x, 7, y, 2, arena, sizeof arena), AF_ERR_ARGUMENT);
  expect("net: wrong output size", af_net_run(&net, x, 8, y, 3, arena, sizeof arena), AF_ERR_ARGUMENT);
  expect("net: arena too small", af_net_run(&net, x, 8, y, 2, arena, 3), AF_ERR_BUFFER);
  af_net_layer broken[2] = {layers[0], layers[1]};
  broken[1].in[2] = 5;  /* reads more than the first layer wrote */
  const af_net bad = {broken, 2};
  expect("net: layers that do not chain", af_net_check(&bad, 8, 2), AF_ERR_ARGUMENT);
  expect("net: no layers", af_net_check(&(af_net){layers, 0}, 8, 2), AF_ERR_ARGUMENT);
}

/* gemmlowp's MultiplyByQuantizedMultiplier as TFLite writes it: the
 * saturating rounding doubling high multiply with its sign-dependent nudge,
 * then the rounding right shift. */
static int32_t reference_requantise(int32_t x, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  const int32_t a = (int32_t)((uint32_t)x << left);
  int32_t high;
  if (a == INT32_MIN && multiplier == INT32_MIN) {
    high = INT32_MAX;
  } else {
    const int64_t ab = (int64_t)a * (int64_t)multiplier;
    const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    high = (int32_t)((ab + nudge) / ((int64_t)1 << 31));
  }
  const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + ((high & mask) > threshold ? 1 : 0);
}

static uint32_t next_random(uint32_t* state) {  /* xorshift32 */
  *state ^= *state << 13;
  *state ^= *state >> 17;
  *state ^= *state << 5;
  return *state;
}

/* af_net_requantise (one multiply-accumulate long) equals the reference on
 * the edges and on a million random values. */
static void check_requantise(void) {
  static const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30), -2, -1, 0, 1, 2,
                                  1 << 30, INT32_MAX - 1, INT32_MAX};
  const int n_edges = (int)(sizeof edges / sizeof edges[0]);
  uint32_t state = 12345u;
  int wrong = 0, tried = 0;
  for (int i = 0; i < 1000000 + n_edges * n_edges * 62; ++i, ++tried) {
    int32_t x, multiplier, shift;
    if (i < n_edges * n_edges * 62) {
      x = edges[i % n_edges];
      multiplier = edges[(i / n_edges) % n_edges];
      shift = (i / (n_edges * n_edges)) % 62 - 31;
    } else {
      x = (int32_t)next_random(&state) >> (next_random(&state) % 24u);
      multiplier = (int32_t)(next_random(&state) >> 1);
      shift = (int32_t)(next_random(&state) % 62u) - 31;
    }
    wrong += af_net_requantise(x, multiplier, shift) != reference_requantise(x, multiplier, shift);
  }
  expect("net: requantise equals gemmlowp's on every value tried", wrong, 0);
  expect("net: values tried", tried > 1000000, 1);
}

/* A 2-D convolution (an odd number of filters, SAME padding) alone and
 * fused with a 2 x 2 max pooling, against the textbook loops with
 * af_net_requantise: ``channels`` input channels, shifts ``shift`` (with a
 * left shift, and one input channel without: the first layer's own path on
 * a core with the DSP extension). */
static void check_convolution(int channels, const int32_t* shift, const char* name) {
  enum { H = 5, W = 7, MAX_C = 3, K = 3, F = 5, PH = 2, PW = 3 };
  const int C = channels;
  static int8_t x[H * W * MAX_C], weights[F * K * K * MAX_C], got[H * W * F], want[H * W * F];
  static int8_t pooled[PH * PW * F], want_pooled[PH * PW * F];
  static const int32_t bias[F] = {100, -2000, 0, 37, -5};
  static const int32_t multiplier[F] = {1518500250, 1073741824, 2000000000, 1300000000,
                                        1100000000};
  static uint64_t arena[256];
  char what[160];
  uint32_t state = 99u;
  for (int i = 0; i < H * W * C; ++i) x[i] = (int8_t)(next_random(&state) & 0xff);
  for (int i = 0; i < F * K * K * C; ++i) weights[i] = (int8_t)(next_random(&state) & 0xff);
  const size_t x_size = (size_t)(H * W * C);
  const int32_t zero_point = -7, out_zero_point = 3, low = -100, high = 120;
  for (int y = 0; y < H; ++y)
    for (int xx = 0; xx < W; ++xx)
      for (int f = 0; f < F; ++f) {
        int32_t acc = bias[f];
        for (int ky = 0; ky < K; ++ky)
          for (int kx = 0; kx < K; ++kx)
            for (int c = 0; c < C; ++c) {
              const int iy = y + ky - 1, ix = xx + kx - 1;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              acc += (x[(iy * W + ix) * C + c] - zero_point) * weights[((f * K + ky) * K + kx) * C + c];
            }
        int32_t v = af_net_requantise(acc, multiplier[f], shift[f]) + out_zero_point;
        want[(y * W + xx) * F + f] = (int8_t)(v < low ? low : v > high ? high : v);
      }
  for (int y = 0; y < PH; ++y)
    for (int xx = 0; xx < PW; ++xx)
      for (int f = 0; f < F; ++f) {
        int best = -128;
        for (int k = 0; k < 4; ++k) {
          const int v = want[((2 * y + k / 2) * W + 2 * xx + k % 2) * F + f];
          best = v > best ? v : best;
        }
        want_pooled[(y * PW + xx) * F + f] = (int8_t)best;
      }
  const af_net_layer layers[2] = {
      {AF_NET_CONV_2D, {H, W, C}, {H, W, F}, {K, K}, {1, 1}, {1, 1}, zero_point, out_zero_point,
       low, high, 1.0f, 1.0f, weights, bias, multiplier, shift},
      {AF_NET_MAX_POOL_2D, {H, W, F}, {PH, PW, F}, {2, 2}, {2, 2}, {0, 0}, out_zero_point,
       out_zero_point, -128, 127, 1.0f, 1.0f, NULL, NULL, NULL, NULL}};
  const af_net conv = {layers, 1}, conv_pool = {layers, 2};
  snprintf(what, sizeof what, "net: %s: arena", name);
  expect(what, af_net_arena_bytes(&conv_pool) <= sizeof arena, 1);
  snprintf(what, sizeof what, "net: %s: convolution equals the textbook loops", name);
  expect(what, af_net_run(&conv, x, x_size, got, sizeof got, arena, sizeof arena) == AF_OK &&
                   memcmp(got, want, sizeof got) == 0, 1);
  snprintf(what, sizeof what, "net: %s: fused pooling equals pooling the convolution", name);
  expect(what, af_net_run(&conv_pool, x, x_size, pooled, sizeof pooled, arena, sizeof arena) ==
                   AF_OK && memcmp(pooled, want_pooled, sizeof pooled) == 0, 1);
  af_net_layer negative = layers[0];
  static const int32_t negative_multiplier[F] = {1, 1, -1, 1, 1};
  negative.multiplier = negative_multiplier;
  snprintf(what, sizeof what, "net: %s: a negative multiplier is refused", name);
  expect(what, af_net_check(&(af_net){&negative, 1}, x_size, sizeof got), AF_ERR_ARGUMENT);
}

static int all_finite(const float* x, int n) {
  for (int i = 0; i < n; ++i)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static int rfft_filter(int n) {
  static float in[AF_RFFT_MAX_N], out[AF_RFFT_MAX_N];
  af_rfft_instance fft;
  if (af_rfft_init(&fft, n) != AF_OK) return 1;
  for (int i = 0; i < n; ++i)
    if (scanf("%f", &in[i]) != 1) return 1;
  af_rfft(&fft, in, out);
  for (int i = 0; i < n; ++i) printf("%.9g\n", out[i]);
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "rfft") == 0) return rfft_filter(atoi(argv[2]));
  if (argc > 5 && strcmp(argv[1], "probs") == 0) {
    int8_t q[AF_EVENTS_MAX_CLASSES];
    float p[AF_EVENTS_MAX_CLASSES];
    const int n = argc - 5;
    for (int c = 0; c < n && c < AF_EVENTS_MAX_CLASSES; ++c) q[c] = (int8_t)atoi(argv[5 + c]);
    if (af_output_probabilities(q, n, strtof(argv[3], NULL), atoi(argv[4]), strtof(argv[2], NULL), p) != AF_OK)
      return 1;
    for (int c = 0; c < n; ++c) printf("%.9g\n", p[c]);
    return 0;
  }
  if (argc > 4 && strcmp(argv[1], "decide") == 0) {
    float p[AF_EVENTS_MAX_CLASSES];
    const int n = argc - 4 < AF_EVENTS_MAX_CLASSES ? argc - 4 : AF_EVENTS_MAX_CLASSES;
    for (int c = 0; c < n; ++c) p[c] = strtof(argv[4 + c], NULL);
    printf("%d\n", af_decide(p, n, strtof(argv[2], NULL), atoi(argv[3])));
    return 0;
  }
  const af_model* m = &af_model_frontend;
  af_rfft_instance fft;
  check_network();
  check_requantise();
  static const int32_t with_left_shift[5] = {-9, 1, -8, -10, 0};
  static const int32_t right_shifts[5] = {-9, -7, -8, -10, 0};
  check_convolution(3, with_left_shift, "3 channels, a left shift");
  check_convolution(1, with_left_shift, "1 channel, a left shift");
  check_convolution(1, right_shifts, "1 channel (a first layer)");
  expect("rfft init: NULL", af_rfft_init(NULL, 512), AF_ERR_NULL);
  expect("rfft init: size not a power of two", af_rfft_init(&fft, 500), AF_ERR_ARGUMENT);
  expect("rfft init: size above AF_RFFT_MAX_N", af_rfft_init(&fft, 2 * AF_RFFT_MAX_N), AF_ERR_ARGUMENT);
  expect("rfft init", af_rfft_init(&fft, m->n_fft), AF_OK);
  expect("scratch macro equals af_scratch_bytes",
         (int)AF_MODEL_SCRATCH_BYTES, (int)af_scratch_bytes(m, AF_MODEL_WINDOW_SAMPLES));
  expect("scratch bytes of no model", (int)af_scratch_bytes(NULL, 100), 0);

  const size_t n = AF_MODEL_WINDOW_SAMPLES / 2;
  for (size_t i = 0; i < n; ++i) audio[i] = (int16_t)((i * 7919u % 2001u) - 1000);  /* noise */
  expect("features: NULL samples",
         af_features(m, NULL, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_NULL);
  expect("features: NULL model",
         af_features(NULL, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_NULL);
  expect("features: NULL FFT",
         af_features(m, audio, n, NULL, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_NULL);
  expect("features: zero samples",
         af_features(m, audio, 0, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_ARGUMENT);
  expect("features: scratch too small",
         af_features(m, audio, n, af_rfft, &fft, scratch, 64, features, AF_MODEL_N_FEATURES), AF_ERR_BUFFER);
  expect("features: output too small",
         af_features(m, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, 10), AF_ERR_BUFFER);
  expect("features: too short",
         af_features(m, audio, (size_t)m->min_samples - 1, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_TOO_SHORT);
  expect("features: noise", af_features(m, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_OK);
  expect("features: finite", all_finite(features, AF_MODEL_N_FEATURES), 1);
  expect("quantise: NULL", af_quantise(m, NULL, AF_MODEL_N_FEATURES, input, sizeof input), AF_ERR_NULL);
  expect("quantise: wrong length", af_quantise(m, features, 3, input, sizeof input), AF_ERR_ARGUMENT);
  expect("quantise: output too small", af_quantise(m, features, AF_MODEL_N_FEATURES, input, 3), AF_ERR_BUFFER);
  {
    const float saved = features[1];
    features[1] = NAN;
    expect("quantise: NaN feature", af_quantise(m, features, AF_MODEL_N_FEATURES, input, sizeof input), AF_ERR_ARGUMENT);
    features[1] = INFINITY;
    expect("quantise: infinite feature", af_quantise(m, features, AF_MODEL_N_FEATURES, input, sizeof input), AF_ERR_ARGUMENT);
    features[1] = saved;
  }
  expect("features: misaligned scratch",
         af_features(m, audio, n, af_rfft, &fft, (char*)roomy_scratch + 4, AF_MODEL_SCRATCH_BYTES, features, AF_MODEL_N_FEATURES), AF_ERR_ARGUMENT);

  memset(audio, 0, sizeof audio);
  for (int i = 0; i < AF_MODEL_N_FEATURES; ++i) features[i] = 12345.0f;
  expect("features: all-zero audio",
         af_features(m, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_SILENT);
  expect("features: all-zero audio leaves the output finite", all_finite(features, AF_MODEL_N_FEATURES), 1);
  for (size_t i = 0; i < n; ++i) audio[i] = 1000;  /* DC: a code, never NaN */
  const int dc = af_features(m, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES);
  expect("features: constant audio gives features or AF_ERR_CONSTANT", dc == AF_OK || dc == AF_ERR_CONSTANT, 1);
  expect("features: constant audio, finite", all_finite(features, AF_MODEL_N_FEATURES), 1);

  af_stream stream;
  size_t used;
  const int streaming = m->preset == AF_PRESET_LOGMEL_STREAM;
  expect("stream init: NULL ring", af_stream_init(&stream, m, NULL, 10), AF_ERR_NULL);
  expect("stream init: ring too small (or a preset that needs af_stream_start)",
         af_stream_init(&stream, m, ring, AF_MODEL_WINDOW_SAMPLES - 1),
         streaming ? AF_ERR_UNSUPPORTED : AF_ERR_BUFFER);
  expect("stream start: NULL memory", af_stream_start(&stream, m, NULL, 10, af_rfft, &fft), AF_ERR_NULL);
  expect("stream start: no FFT", af_stream_start(&stream, m, stream_memory, AF_MODEL_STREAM_BYTES, NULL, &fft), AF_ERR_NULL);
  expect("stream start: memory too small",
         af_stream_start(&stream, m, stream_memory, af_stream_bytes(m) - 1, af_rfft, &fft), AF_ERR_BUFFER);
  expect("stream start: misaligned memory",
         af_stream_start(&stream, m, (char*)stream_memory + 4, AF_MODEL_STREAM_BYTES, af_rfft, &fft), AF_ERR_ARGUMENT);
  expect("stream bytes: the macro's", (int)af_stream_bytes(m), (int)AF_MODEL_STREAM_BYTES);
  {
    af_model other_version = *m;
    other_version.feature_version = AF_FEATURE_VERSION + 1;
    expect("stream start: a header of another feature version",
           af_stream_start(&stream, &other_version, stream_memory, AF_MODEL_STREAM_BYTES, af_rfft, &fft), AF_ERR_UNSUPPORTED);
    expect("features: a header of another feature version",
           af_features(&other_version, audio, n, af_rfft, &fft, scratch, sizeof scratch, features, AF_MODEL_N_FEATURES), AF_ERR_UNSUPPORTED);
  }
  expect("stream start", af_stream_start(&stream, m, stream_memory, AF_MODEL_STREAM_BYTES, af_rfft, &fft), AF_OK);
  expect("stream: window before one is ready",
         af_stream_window(&stream, af_rfft, &fft, scratch, sizeof scratch, input, sizeof input, NULL, NULL, NULL), AF_ERR_STATE);
  expect("stream: push NULL samples", af_stream_push(&stream, NULL, 5, &used), AF_ERR_NULL);
  expect("stream: finish with no samples", af_stream_finish(&stream), AF_ERR_ARGUMENT);
  af_stream_reset(&stream);
  expect("stream: push silence", af_stream_push(&stream, audio, 100, &used), AF_OK);
  memset(audio, 0, sizeof audio);
  af_stream_reset(&stream);
  int status = af_stream_push(&stream, audio, AF_MODEL_WINDOW_SAMPLES, &used);
  expect("stream: a silent window is ready", status, AF_WINDOW_READY);
  expect("stream: its model input: AF_ERR_SILENT",
         af_stream_window(&stream, af_rfft, &fft, scratch, sizeof scratch, input, sizeof input, NULL, NULL, NULL), AF_ERR_SILENT);
  af_stream_push(&stream, audio, AF_MODEL_WINDOW_SAMPLES, &used);
  expect("stream: window scratch too small (logmel_stream needs none)",
         af_stream_window(&stream, af_rfft, &fft, scratch, 16, input, sizeof input, NULL, NULL, NULL),
         streaming ? AF_ERR_SILENT : AF_ERR_BUFFER);
  af_stream_reset(&stream);
  expect("stream: a clip shorter than one frame",
         (af_stream_push(&stream, audio, 100, &used), af_stream_finish(&stream)), AF_WINDOW_READY);
  expect("stream: ... is too short for features",
         af_stream_window(&stream, af_rfft, &fft, scratch, sizeof scratch, input, sizeof input, NULL, NULL, NULL), AF_ERR_TOO_SHORT);

  af_events events;
  const float bad_thresholds[AF_MODEL_NUM_LABELS] = {2.0f};
  af_event_config bad = af_model_events;
  bad.thresholds = bad_thresholds;
  expect("events init: NULL", af_events_init(NULL, &af_model_events), AF_ERR_NULL);
  expect("events init: threshold outside [0, 1]", af_events_init(&events, &bad), AF_ERR_ARGUMENT);
  bad = af_model_events;
  bad.smooth_windows = 2 * AF_EVENTS_MAX_SMOOTH;
  expect("events init: smoothing too wide", af_events_init(&events, &bad), AF_ERR_ARGUMENT);
  expect("events init", af_events_init(&events, &af_model_events), AF_OK);
  size_t n_out;
  const float probs[AF_MODEL_NUM_LABELS] = {0};
  expect("events push: NULL probabilities", af_events_push(&events, NULL, 32000, NULL, 0, &n_out), AF_ERR_NULL);
  af_event room[AF_MODEL_NUM_LABELS];
  expect("events push: no room", af_events_push(&events, probs, 32000, NULL, 0, &n_out), AF_ERR_BUFFER);
  expect("events push: no room says how much", (int)n_out, AF_MODEL_NUM_LABELS);
  expect("events push", af_events_push(&events, probs, 32000, room, AF_MODEL_NUM_LABELS, &n_out), AF_OK);
  const float nan_probs[AF_MODEL_NUM_LABELS] = {NAN};
  expect("events push: NaN probability", af_events_push(&events, nan_probs, 64000, room, AF_MODEL_NUM_LABELS, &n_out), AF_ERR_ARGUMENT);
  expect("events push: a centre before the last", af_events_push(&events, probs, 16000, room, AF_MODEL_NUM_LABELS, &n_out), AF_ERR_ARGUMENT);
  expect("events push: a negative centre", af_events_push(&events, probs, -2, room, AF_MODEL_NUM_LABELS, &n_out), AF_ERR_ARGUMENT);
  check_events_are_never_lost();

  float p3[3];
  const int8_t q3[3] = {-128, 0, 127};
  expect("output probabilities: NULL", af_output_probabilities(NULL, 3, 1.0f / 256, -128, 1.0f, p3), AF_ERR_NULL);
  expect("output probabilities: temperature 0", af_output_probabilities(q3, 3, 1.0f / 256, -128, 0.0f, p3), AF_ERR_ARGUMENT);
  expect("output probabilities: infinite scale", af_output_probabilities(q3, 3, INFINITY, -128, 1.0f, p3), AF_ERR_ARGUMENT);
  expect("output probabilities: infinite temperature", af_output_probabilities(q3, 3, 1.0f / 256, -128, INFINITY, p3), AF_ERR_ARGUMENT);
  printf("sizeof(af_stream) %zu, sizeof(af_events) %zu, sizeof(af_rfft_instance) %zu\n",
         sizeof(af_stream), sizeof(af_events), sizeof(af_rfft_instance));
  printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
