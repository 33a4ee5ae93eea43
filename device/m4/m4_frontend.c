/* The device front end on an emulated Cortex-M4F (QEMU mps2-an386, run by
 * tests/test_device.py and bench/bench_device.py):
 *
 *   qemu-system-arm -M mps2-an386 -nographic -icount shift=0 \
 *     -semihosting-config enable=on,target=native,arg=m4,arg=clip.raw -kernel m4_frontend.elf
 *
 * clip.raw: 16 kHz mono int16 samples (little-endian). Prints one line per
 * window, the int8 model input as the host tool prints it (an empty line
 * for a window without features), then one "cost" line per window and a
 * summary. Built with the model's network header (AF_M4_DETECTOR: `make -C
 * device m4` when model_16k_net.h is there), it is the whole detector: each
 * window also runs the int8 network ("output" line: its int8 output), the
 * calibration and the event finder, as `features --stream --events` does
 * ("window CENTRE_S P..." and "event CLASS START_S END_S PEAK MEAN" lines, the
 * times printed from integer half-samples),
 * and the cost line counts the network's and the events' instructions. With -icount shift=0 every instruction takes 1 ns of virtual
 * time and the board's 25 MHz timer ticks every 40 instructions, so ticks
 * x 40 is the instruction count. */
#include <stdint.h>
#include <stdio.h>

#include "af_frontend.h"
#include "af_rfft.h"
#include "model_16k_frontend.h"
#ifdef AF_M4_DETECTOR
#include "af_events.h"
#include "af_net.h"
#include "model_16k_net.h"
typedef char net_reads_the_front_ends_features[MODEL_NET_INPUTS == AF_MODEL_N_FEATURES ? 1 : -1];
typedef char net_writes_one_value_per_label[MODEL_NET_OUTPUTS == AF_MODEL_NUM_LABELS ? 1 : -1];
static uint64_t net_arena[(MODEL_NET_ARENA_BYTES + 7) / 8];
static af_events events;
static uint64_t net_instructions, event_instructions;
#endif

#define TIMER0 ((volatile uint32_t*)0x40000000u) /* CMSDK APB timer 0: CTRL, VALUE, RELOAD */
#define INSTRUCTIONS_PER_TICK 40u
#define STACK_PROBE_WORDS 4096u /* the front end may use up to 16 KB of stack */
#define PAINT 0xA5A5A5A5u

static uint64_t stream_memory[(AF_MODEL_STREAM_BYTES + 7) / 8];
static uint64_t scratch[(AF_MODEL_WINDOW_SCRATCH_BYTES + 7) / 8];
static int8_t input[AF_MODEL_N_FEATURES];
static af_rfft_instance fft;
static af_stream stream;

static uint32_t ticks(void) { return TIMER0[1]; } /* counts down */

/* Paint the stack below the caller's frame, so that stack_used() can find
 * how deep the next call went. */
static __attribute__((noinline)) uint32_t* paint_stack(void) {
  uint32_t* top = (uint32_t*)__builtin_frame_address(0) - 64; /* leave this frame alone */
  for (uint32_t i = 0; i < STACK_PROBE_WORDS; ++i) top[-(int32_t)i] = PAINT;
  return top;
}

static uint32_t stack_used(const uint32_t* top) {
  uint32_t deepest = 0;
  for (uint32_t i = 0; i < STACK_PROBE_WORDS; ++i)
    if (top[-(int32_t)i] != PAINT) deepest = i + 1;
  return deepest * 4u + 64u * 4u; /* plus the margin left unpainted */
}

static uint64_t window_instructions, push_instructions;
static uint32_t max_stack;

#ifdef AF_M4_DETECTOR
/* A time in half-samples as seconds with three decimals, in integers
 * (round half away from zero: times are never negative). */
static void print_time(int64_t t) {
  const int64_t per_ms = 2 * (int64_t)af_model_frontend.sample_rate;  /* half-samples per s */
  const int64_t ms = (t * 1000 + per_ms / 2) / per_ms;
  printf(" %lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
}

static void print_events(const af_event* found, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    printf("event %s", af_model_labels[found[i].class_index]);
    print_time(found[i].start);
    print_time(found[i].end);
    printf(" %.6f %.6f\n", (double)found[i].peak_probability,
           (double)found[i].mean_probability);
  }
}

/* The network, the calibration and the event finder on one window, timed
 * and with the stack watched as the front end is; 1 on a failure. */
static int detect(int usable, int64_t centre) {
  float probs[AF_MODEL_NUM_LABELS] = {0};
  int8_t output[AF_MODEL_NUM_LABELS];
  uint32_t* top = paint_stack();
  uint32_t start = ticks();
  if (usable && af_net_run(&af_model_net, input, AF_MODEL_N_FEATURES, output,
                           AF_MODEL_NUM_LABELS, net_arena, sizeof net_arena) != AF_OK)
    return 1;
  const uint64_t net = (uint64_t)(start - ticks()) * INSTRUCTIONS_PER_TICK;
  af_event found[AF_MODEL_NUM_LABELS];
  size_t n = 0;
  start = ticks();
  if (usable && af_output_probabilities(output, AF_MODEL_NUM_LABELS, kOutputScale,
                                        kOutputZeroPoint, kTemperature, probs) != AF_OK)
    return 1;
  if (af_events_push(&events, probs, centre, found, AF_MODEL_NUM_LABELS, &n) != AF_OK) return 1;
  const uint64_t spent = (uint64_t)(start - ticks()) * INSTRUCTIONS_PER_TICK;
  const uint32_t used = stack_used(top);
  if (used > max_stack) max_stack = used;
  net_instructions += net;
  event_instructions += spent;
  if (usable) {
    printf("output");
    for (int c = 0; c < AF_MODEL_NUM_LABELS; ++c) printf(" %d", output[c]);
    putchar('\n');
  }
  printf("window");
  print_time(centre);
  for (int c = 0; c < AF_MODEL_NUM_LABELS; ++c) printf(" %.6f", (double)probs[c]);
  putchar('\n');
  print_events(found, n);
  printf("cost net=%llu events=%llu\n", (unsigned long long)net, (unsigned long long)spent);
  return 0;
}

/* The network's cost step by step (a layer, or a convolution with the max
 * pooling fused into it, as af_net.c runs them) on the last window's
 * input: the difference between running the first k layers and the first
 * k - 1 steps' layers. One "step" line each. */
static void profile_steps(void) {
  static int8_t prefix_output[MODEL_NET_ARENA_BYTES];  /* holds any step's output */
  uint64_t before = 0;
  int first = 0;
  for (int k = 1; k <= af_model_net.n_layers; ++k) {
    const af_net_layer* l = &af_model_net.layers[k - 1];
    const af_net_layer* next = k < af_model_net.n_layers ? &af_model_net.layers[k] : NULL;
    if ((l->op == AF_NET_CONV_2D || l->op == AF_NET_DEPTHWISE_CONV_2D) && next != NULL &&
        next->op == AF_NET_MAX_POOL_2D && next->pad[0] == 0 && next->pad[1] == 0)
      continue;  /* fused with the pooling after it */
    const af_net prefix = {af_model_net.layers, k};
    const size_t out_size = (size_t)l->out[0] * (size_t)l->out[1] * (size_t)l->out[2];
        const uint32_t start = ticks();
    if (af_net_run(&prefix, input, AF_MODEL_N_FEATURES, prefix_output, out_size, net_arena,
                   sizeof net_arena) != AF_OK)
      return;
    const uint64_t spent = (uint64_t)(start - ticks()) * INSTRUCTIONS_PER_TICK;
    printf("step layers=%d-%d instructions=%llu\n", first, k - 1,
           (unsigned long long)(spent - before));
    before = spent;
    first = k;
  }
}
#endif

static int emit_window(int* windows, int* failed) {
  uint32_t* top = paint_stack();
  const uint32_t start = ticks();
  int64_t centre = 0;
  const int status = af_stream_window(&stream, af_rfft, &fft, scratch, sizeof scratch, input,
                                      sizeof input, NULL, NULL, &centre);
  const uint64_t spent = (uint64_t)(start - ticks()) * INSTRUCTIONS_PER_TICK;
  const uint32_t used = stack_used(top);
  if (used > max_stack) max_stack = used;
  window_instructions += spent;
  *windows += 1;
  if (status == AF_OK) {
    for (int i = 0; i < AF_MODEL_N_FEATURES; ++i) printf(i ? " %d" : "%d", input[i]);
  } else if (status != AF_ERR_SILENT && status != AF_ERR_TOO_SHORT && status != AF_ERR_CONSTANT) {
    *failed = 1;
  }
  printf("\ncost window=%llu\n", (unsigned long long)spent);
#ifdef AF_M4_DETECTOR
  if (!*failed && detect(status == AF_OK, centre) != 0) *failed = 1;
#else
  (void)centre;
#endif
  return status;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    printf("usage: m4_frontend clip.raw\n");
    return 2;
  }
  FILE* file = fopen(argv[1], "rb");
  if (file == NULL) {
    printf("%s: cannot open\n", argv[1]);
    return 1;
  }
  TIMER0[2] = 0xFFFFFFFFu;
  TIMER0[0] = 1u;
  if (af_rfft_init(&fft, af_model_frontend.n_fft) != AF_OK ||
      af_stream_start(&stream, &af_model_frontend, stream_memory, sizeof stream_memory, af_rfft,
                      &fft) != AF_OK) {
    printf("cannot start the front end\n");
    return 1;
  }
#ifdef AF_M4_DETECTOR
  if (af_events_init(&events, &af_model_events) != AF_OK ||
      af_net_check(&af_model_net, AF_MODEL_N_FEATURES, AF_MODEL_NUM_LABELS) != AF_OK) {
    printf("cannot start the network or the events\n");
    return 1;
  }
#endif
  static int16_t block[1000];
  size_t got;
  int windows = 0, failed = 0;
  uint64_t samples = 0;
  while (!failed && (got = fread(block, sizeof block[0], 1000, file)) > 0) {
    samples += got;
    size_t offset = 0;
    while (offset < got && !failed) {
      size_t used;
      uint32_t* top = paint_stack();  /* logmel_stream computes frames while pushing */
      const uint32_t start = ticks();
      const int status = af_stream_push(&stream, block + offset, got - offset, &used);
      push_instructions += (uint64_t)(start - ticks()) * INSTRUCTIONS_PER_TICK;
      const uint32_t depth = stack_used(top);
      if (depth > max_stack) max_stack = depth;
      offset += used;
      if (status == AF_WINDOW_READY) emit_window(&windows, &failed);
    }
  }
  fclose(file);
  if (!failed && af_stream_finish(&stream) == AF_WINDOW_READY) emit_window(&windows, &failed);
#ifdef AF_M4_DETECTOR
  af_event open_events[AF_MODEL_NUM_LABELS * (AF_EVENTS_MAX_SMOOTH / 2 + 2)];
  size_t n_open = 0;
  if (!failed && af_events_finish(&events, open_events,
                                  sizeof open_events / sizeof open_events[0], &n_open) == AF_OK)
    print_events(open_events, n_open);
  if (!failed) profile_steps();
  printf("detector net_instructions=%llu event_instructions=%llu arena_bytes=%lu "
         "event_bytes=%lu\n", (unsigned long long)net_instructions,
         (unsigned long long)event_instructions, (unsigned long)sizeof net_arena,
         (unsigned long)sizeof events);
#endif
  printf("summary samples=%llu windows=%d window_instructions=%llu push_instructions=%llu "
         "stack_bytes=%lu state_bytes=%lu scratch_bytes=%lu\n",
         (unsigned long long)samples, windows, (unsigned long long)window_instructions,
         (unsigned long long)push_instructions, (unsigned long)max_stack,
         (unsigned long)(sizeof stream_memory + sizeof stream + sizeof fft),
         (unsigned long)sizeof scratch);
  return failed;
}
