/* The device front end on an emulated Cortex-M4F (QEMU mps2-an386, run by
 * tests/test_device.py and bench/bench_device.py):
 *
 *   qemu-system-arm -M mps2-an386 -nographic -icount shift=0 \
 *     -semihosting-config enable=on,target=native,arg=m4,arg=clip.raw -kernel m4_frontend.elf
 *
 * clip.raw: 16 kHz mono int16 samples (little-endian). Prints one line per
 * window, the int8 model input as the host tool prints it (an empty line
 * for a window without features), then one "cost" line per window and a
 * summary. With -icount shift=0 every instruction takes 1 ns of virtual
 * time and the board's 25 MHz timer ticks every 40 instructions, so ticks
 * x 40 is the instruction count. */
#include <stdint.h>
#include <stdio.h>

#include "af_frontend.h"
#include "af_rfft.h"
#include "model_16k_frontend.h"

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

static int emit_window(int* windows, int* failed) {
  uint32_t* top = paint_stack();
  const uint32_t start = ticks();
  const int status = af_stream_window(&stream, af_rfft, &fft, scratch, sizeof scratch, input,
                                      sizeof input, NULL, NULL, NULL);
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
  printf("summary samples=%llu windows=%d window_instructions=%llu push_instructions=%llu "
         "stack_bytes=%lu state_bytes=%lu scratch_bytes=%lu\n",
         (unsigned long long)samples, windows, (unsigned long long)window_instructions,
         (unsigned long long)push_instructions, (unsigned long)max_stack,
         (unsigned long)(sizeof stream_memory + sizeof stream + sizeof fft),
         (unsigned long)sizeof scratch);
  return failed;
}
