/* Host tool: the model input of every window of a 16 kHz mono 16-bit WAV,
 * computed by the device front end exactly as predict.py cuts and
 * featurises it.
 *
 *   features clip.wav            one line per window: the int8 model input
 *   features --float clip.wav    the same windows' features (before standardisation)
 *   features --net clip.wav      the int8 network's output of every window (af_net.c, the
 *                                arithmetic of TensorFlow Lite Micro's reference kernels)
 *   features --events probs.txt  events from per-window probabilities
 *                                (lines "centre_s p_0 p_1 ..."), as predict.py finds them
 *   features --memory            bytes of state and scratch for this model
 *   features --time rec.wav      microseconds of front end per window (for bench_device.py)
 *   features --stream            raw 16 kHz mono s16le PCM from stdin, a line per window as it
 *                                completes, e.g. arecord -r 16000 -f S16_LE -c 1 | features --stream
 *   features --stream --events   the same, classified by the int8 network (af_net.c):
 *                                "window CENTRE_S P_0 P_1 ..." per window and
 *                                "event CLASS START_S END_S PEAK MEAN" as each event ends
 *
 * A window without features (silence) prints an empty line; a clip of a
 * single window without features is an error. Exit status 0 on success,
 * 1 on bad input, with the reason on stderr. */
#define _POSIX_C_SOURCE 199309L  /* clock_gettime, for --time */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "af_events.h"
#include "af_frontend.h"
#include "af_rfft.h"
#include "af_net.h"
#include "model_16k_frontend.h"
#include "wav_reader.h"
#ifndef AF_NO_NET
#include "model_16k_net.h"
#else /* a front-end header without a converted model beside it (the Makefile checks) */
#define MODEL_NET_UNSUPPORTED "there is no model_16k_net.h beside model_16k_frontend.h " \
                              "(run `python model_conv.py`)"
enum { MODEL_NET_ARENA_BYTES = 1, kOutputZeroPoint = 0 };
static const float kOutputScale = 1.0f, kTemperature = 1.0f;
static const af_net af_model_net = {NULL, 0};
#endif
#ifndef MODEL_NET_UNSUPPORTED
/* A network header from another model must not build (C99's static check:
 * an array of negative size); af_net_run checks every layer at run time too. */
typedef char net_reads_the_front_ends_features[MODEL_NET_INPUTS == AF_MODEL_N_FEATURES ? 1 : -1];
typedef char net_writes_one_value_per_label[MODEL_NET_OUTPUTS == AF_MODEL_NUM_LABELS ? 1 : -1];
#endif

static uint64_t stream_memory[(AF_MODEL_STREAM_BYTES + 7) / 8];
static uint64_t scratch[(AF_MODEL_WINDOW_SCRATCH_BYTES + 7) / 8];
static float features[AF_MODEL_N_FEATURES];
static int8_t input[AF_MODEL_N_FEATURES];
static af_rfft_instance fft;
static af_events live_events;  /* --stream --events */
static uint64_t net_arena[(MODEL_NET_ARENA_BYTES + 7) / 8];
static double seconds_in_front_end;  /* --time */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char* reason(int status) {
  switch (status) {
    case AF_ERR_SILENT: return "no features: the audio is silent (all zero, or nothing left after trimming)";
    case AF_ERR_TOO_SHORT: return "no features: too short (fewer samples than the model's minimum clip)";
    case AF_ERR_CONSTANT: return "no features: the spectrum is constant";
    case AF_ERR_BUFFER: return "a buffer is too small";
    case AF_ERR_UNSUPPORTED: return "the model's front end is not supported by this library";
    default: return "front end error";
  }
}

enum { PRINT_INT8, PRINT_FLOAT, PRINT_NOTHING, PRINT_EVENTS, PRINT_NET };

/* Seconds of a time in half-samples (the event code's unit), for printing. */
static double seconds(int64_t t) { return AF_HALF_SAMPLES_TO_S(t, af_model_frontend.sample_rate); }

static void print_events(const af_event* found, size_t n) {
  for (size_t i = 0; i < n; ++i)
    printf("event %s %.3f %.3f %.6f %.6f\n", af_model_labels[found[i].class_index],
           seconds(found[i].start), seconds(found[i].end), (double)found[i].peak_probability,
           (double)found[i].mean_probability);
}

/* The int8 network on the window's input (``input``); 1 after a message when
 * the generated network does not fit the model's header. */
static int run_network(int8_t* output) {
  if (af_net_arena_bytes(&af_model_net) != MODEL_NET_ARENA_BYTES) {  /* generator and C agree */
    fprintf(stderr, "model_16k_net.h: MODEL_NET_ARENA_BYTES is not af_net_arena_bytes\n");
    return 1;
  }
  if (af_net_run(&af_model_net, input, AF_MODEL_N_FEATURES, output, AF_MODEL_NUM_LABELS,
                 net_arena, sizeof net_arena) == AF_OK)
    return 0;
  fprintf(stderr, "model_16k_net.h: the network does not fit this model's header\n");
  return 1;
}

/* --stream --events: classify the window (all zeros when it is silent, as
 * predict.py), print its probabilities, push them to the event finder and
 * print the events that ended. Returns 0, or 1 after a message. */
static int classify_window(int usable, int64_t centre) {
  float probs[AF_MODEL_NUM_LABELS] = {0};
  if (usable) {
    int8_t output[AF_MODEL_NUM_LABELS];
    if (run_network(output) != 0) return 1;
    if (af_output_probabilities(output, AF_MODEL_NUM_LABELS, kOutputScale, kOutputZeroPoint,
                                kTemperature, probs) != AF_OK) {
      fprintf(stderr, "model_16k_net.h: output quantisation or temperature out of range\n");
      return 1;
    }
  }
  printf("window %.3f", seconds(centre));
  for (int c = 0; c < AF_MODEL_NUM_LABELS; ++c) printf(" %.6f", probs[c]);
  putchar('\n');
  af_event found[AF_MODEL_NUM_LABELS];
  size_t n = 0;
  if (af_events_push(&live_events, probs, centre, found, AF_MODEL_NUM_LABELS, &n) != AF_OK)
    return 1;
  print_events(found, n);
  return 0;
}

/* Returns 0, or 1 after a message (--net: the network did not run). */
static int print_window(int mode) {
  if (mode == PRINT_NOTHING) return 0;
  if (mode == PRINT_NET) {
    int8_t output[AF_MODEL_NUM_LABELS];
    if (run_network(output) != 0) return 1;
    for (int c = 0; c < AF_MODEL_NUM_LABELS; ++c) printf(c ? " %d" : "%d", output[c]);
    putchar('\n');
    return 0;
  }
  for (int i = 0; i < AF_MODEL_N_FEATURES; ++i) {
    if (mode == PRINT_FLOAT) printf(i ? " %.9g" : "%.9g", features[i]);
    else printf(i ? " %d" : "%d", input[i]);
  }
  putchar('\n');
  return 0;
}

/* Returns 0 (printed), or 1 after a message when the only window has no features. */
static int emit_window(af_stream* stream, const char* path, int mode, int* windows,
                       int* silent) {
  const double started = now();
  int64_t centre = 0;
  const int status = af_stream_window(stream, af_rfft, &fft, scratch, sizeof scratch, input,
                                      sizeof input, mode == PRINT_FLOAT ? features : NULL,
                                      NULL, &centre);
  seconds_in_front_end += now() - started;
  *windows += 1;
  if (status == AF_OK) {
    if (mode == PRINT_EVENTS) return classify_window(1, centre);
    return print_window(mode);
  }
  if (status != AF_ERR_SILENT && status != AF_ERR_TOO_SHORT && status != AF_ERR_CONSTANT) {
    fprintf(stderr, "%s: %s (status %d)\n", path, reason(status), status);
    return 1;
  }
  if (stream->finished && *windows == 1) {  /* the whole clip: nothing to classify */
    fprintf(stderr, "%s: %s\n", path, reason(status));
    return 1;
  }
  *silent += 1;
  if (mode == PRINT_EVENTS) return classify_window(0, centre);
  if (mode != PRINT_NOTHING) putchar('\n');
  return 0;
}

/* Where the samples come from: a WAV file, or raw s16le PCM on stdin (whose
   first bytes were read to look for a file header, and are its first samples). */
typedef struct {
  wav_reader* wav;
  FILE* raw;
  int16_t first[2];
  size_t n_first;
} sample_source;

static size_t read_samples(sample_source* source, int16_t* block, size_t n) {
  if (source->wav != NULL) return wav_read(source->wav, block, n);
  size_t got = 0;
  while (source->n_first > 0 && got < n) {  /* the peeked samples come first */
    block[got++] = source->first[2 - source->n_first];
    source->n_first--;
  }
  return got + fread(block + got, sizeof block[0], n - got, source->raw);  /* s16le host */
}

/* Raw PCM has no header; refuse a stream that starts with a file header
   (arecord writes a WAV header unless given -t raw), instead of reading the
   file's bytes as samples. Returns 0 and keeps the bytes as samples, or 1. */
static int open_raw(sample_source* source, FILE* raw) {
  unsigned char head[4] = {0, 0, 0, 0};
  source->wav = NULL;
  source->raw = raw;
  const size_t got = fread(head, 1, sizeof head, raw);
  static const char* const headers[][2] = {{"RIFF", "WAV"}, {"RIFX", "WAV"}, {"fLaC", "FLAC"},
                                           {"OggS", "Ogg"}, {"ID3", "MP3"}, {"FORM", "AIFF"}};
  for (size_t k = 0; k < sizeof headers / sizeof headers[0]; k++) {
    if (got >= strlen(headers[k][0]) && memcmp(head, headers[k][0], strlen(headers[k][0])) == 0) {
      fprintf(stderr, "stdin: a %s file header, but --stream reads raw 16 kHz mono s16le PCM: "
              "record with `arecord -t raw -r 16000 -f S16_LE -c 1`, or give the file as an "
              "argument instead of on stdin\n", headers[k][1]);
      return 1;
    }
  }
  source->n_first = got / 2;
  memcpy(source->first, head, 2 * source->n_first);
  if (got % 2) {
    fprintf(stderr, "stdin: %zu byte(s): not a whole 16-bit sample\n", got);
    return 1;
  }
  return 0;
}

/* Push the source through the stream; a line per window as it is ready. */
static int run_stream(sample_source* source, const char* path, int mode) {
  af_stream stream;
  int status = af_rfft_init(&fft, af_model_frontend.n_fft);
  if (status == AF_OK)
    status = af_stream_start(&stream, &af_model_frontend, stream_memory, sizeof stream_memory,
                             af_rfft, &fft);
  if (status != AF_OK) {
    fprintf(stderr, "%s: cannot start the front end: %s\n", path, reason(status));
    return 1;
  }
  int16_t block[1000];  /* an odd block size: windows complete mid-block */
  size_t got;
  int windows = 0, silent = 0, failed = 0;
  while (!failed && (got = read_samples(source, block, 1000)) > 0) {
    size_t offset = 0;
    while (offset < got && !failed) {
      size_t used;
      const double started = now();  /* logmel_stream computes its frames while pushing */
      status = af_stream_push(&stream, block + offset, got - offset, &used);
      seconds_in_front_end += now() - started;
      offset += used;
      if (status == AF_WINDOW_READY) {
        failed = emit_window(&stream, path, mode, &windows, &silent);
        fflush(stdout);  /* live: each window as soon as it is computed */
      }
    }
  }
  if (!failed && source->wav != NULL && source->wav->error) {
    fprintf(stderr, "%s: %s\n", path, source->wav->error_message);
    failed = 1;
  }
  if (!failed && source->raw != NULL && ferror(source->raw)) {  /* not the end: an error */
    fprintf(stderr, "%s: read error; the stream stopped before its end\n", path);
    failed = 1;
  }
  if (failed) return 1;
  status = af_stream_finish(&stream);
  if (status == AF_ERR_ARGUMENT) {
    fprintf(stderr, "%s: no audio samples\n", path);
    return 1;
  }
  if (status == AF_WINDOW_READY && emit_window(&stream, path, mode, &windows, &silent) != 0)
    return 1;
  if (windows > 0 && silent == windows) {  /* as predict.py: nothing in it to classify */
    fprintf(stderr, "%s: every window is silent\n", path);
    return 1;
  }
  if (mode == PRINT_EVENTS) {  /* the events still open at the end */
    static af_event found[AF_MODEL_NUM_LABELS * (AF_EVENTS_MAX_SMOOTH / 2 + 2)];
    size_t n = 0;
    if (af_events_finish(&live_events, found, sizeof found / sizeof found[0], &n) != AF_OK)
      return 1;
    print_events(found, n);
  }
  if (mode == PRINT_NOTHING)
    printf("windows %d, front end %.3f s, %.1f us per window\n", windows, seconds_in_front_end,
           1e6 * seconds_in_front_end / (windows ? windows : 1));
  return 0;
}

static int run_features(const char* path, int mode) {
  wav_reader wav;
  char message[256];
  if (wav_open(&wav, path, message, sizeof message) != 0) {
    fprintf(stderr, "%s\n", message);
    return 1;
  }
  if (wav.sample_rate != af_model_frontend.sample_rate || wav.channels != 1 ||
      wav.bits_per_sample != 16) {
    fprintf(stderr, "%s: %d Hz, %d channel(s), %d-bit; the model needs %d Hz mono 16-bit PCM. "
            "Convert it first, e.g. `sox %s -r %d -c 1 -b 16 out.wav`\n", path, wav.sample_rate,
            wav.channels, wav.bits_per_sample, af_model_frontend.sample_rate, path,
            af_model_frontend.sample_rate);
    wav_close(&wav);
    return 1;
  }
  sample_source source = {&wav, NULL, {0, 0}, 0};
  const int status = run_stream(&source, path, mode);
  wav_close(&wav);
  return status;
}

static int compare_events(const void* a, const void* b) {  /* by start, then class: predict.py's order */
  const af_event* x = (const af_event*)a;
  const af_event* y = (const af_event*)b;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  return x->class_index - y->class_index;
}

static int run_events(const char* path) {
  FILE* file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "%s: cannot open\n", path);
    return 1;
  }
  static af_event found[4096];
  size_t n_found = 0, n_new = 0;
  af_events events;
  if (af_events_init(&events, &af_model_events) != AF_OK) {
    fprintf(stderr, "model_16k_frontend.h: event settings out of range\n");
    fclose(file);
    return 1;
  }
  float probs[AF_MODEL_NUM_LABELS];
  char text[4096];
  int line = 0, status = AF_OK;
  while (status == AF_OK && fgets(text, sizeof text, file) != NULL) {
    ++line;
    char* cursor = text;
    char* end;
    const double centre_s = strtod(cursor, &end);
    int ok = end != cursor;
    for (int c = 0; ok && c < AF_MODEL_NUM_LABELS; ++c) {
      cursor = end;
      probs[c] = strtof(cursor, &end);
      ok = end != cursor;
    }
    while (ok && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) ++end;
    if (!ok || *end != '\0') {
      fprintf(stderr, "%s: line %d: expected a centre in seconds and %d probabilities\n", path,
              line, AF_MODEL_NUM_LABELS);
      fclose(file);
      return 1;
    }
    /* seconds -> half-samples; a centre that is not finite and non-negative
     * becomes -1, which af_events_push refuses */
    const double half_samples = centre_s * 2.0 * af_model_frontend.sample_rate;
    const int64_t centre = isfinite(half_samples) && half_samples >= 0.0 &&
                                   half_samples < (double)AF_EVENTS_MAX_CENTRE
                               ? (int64_t)llround(half_samples) : -1;
    status = af_events_push(&events, probs, centre, found + n_found,
                            sizeof found / sizeof found[0] - n_found, &n_new);
    if (status == AF_OK) n_found += n_new;  /* on an error, n_new is the room needed */
    if (status == AF_ERR_ARGUMENT) {
      fprintf(stderr, "%s: line %d: probabilities must be in [0, 1] and centres finite, "
              "non-negative and increasing\n", path, line);
      fclose(file);
      return 1;
    }
  }
  fclose(file);
  if (status == AF_OK) {
    status = af_events_finish(&events, found + n_found, sizeof found / sizeof found[0] - n_found,
                              &n_new);
    if (status == AF_OK) n_found += n_new;
  }
  if (status != AF_OK) {
    fprintf(stderr, "%s: too many events\n", path);
    return 1;
  }
  qsort(found, n_found, sizeof found[0], compare_events);
  for (size_t i = 0; i < n_found; ++i)
    printf("%s %.17g %.17g %.9g %.9g\n", af_model_labels[found[i].class_index],
           seconds(found[i].start), seconds(found[i].end), (double)found[i].peak_probability,
           (double)found[i].mean_probability);
  return 0;
}

static int run_memory(void) {
  printf("stream state (af_stream): %zu bytes\n", sizeof(af_stream));
  printf("stream memory (%s): %zu bytes (af_stream_bytes: %zu)\n",
         af_model_frontend.preset == AF_PRESET_LOGMEL_STREAM
             ? "mel rows of a window, FFT buffers, one frame of samples"
             : "a ring of one window of int16 samples",
         sizeof stream_memory, af_stream_bytes(&af_model_frontend));
  printf("scratch: %zu bytes (af_scratch_bytes: %zu); af_stream_window needs %zu of it\n",
         (size_t)AF_MODEL_SCRATCH_BYTES, af_scratch_bytes(&af_model_frontend, AF_MODEL_WINDOW_SAMPLES),
         (size_t)AF_MODEL_WINDOW_SCRATCH_BYTES);
  printf("portable FFT (af_rfft_instance): %zu bytes\n", sizeof(af_rfft_instance));
  printf("events (af_events): %zu bytes\n", sizeof(af_events));
  printf("int8 model input: %d bytes\n", AF_MODEL_N_FEATURES);
  printf("total: %zu bytes (for streams: state, memory, window scratch, FFT, events, input)\n",
         sizeof(af_stream) + sizeof stream_memory + (size_t)AF_MODEL_WINDOW_SCRATCH_BYTES +
             sizeof(af_rfft_instance) + sizeof(af_events) + AF_MODEL_N_FEATURES);
  return 0;
}

/* A full disk or a closed pipe must not pass for success: the output is lost. */
static int finish_output(int status) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "stdout: write error; the output is incomplete\n");
    return 1;
  }
  return status;
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "--memory") == 0) return run_memory();
  if (argc == 3 && strcmp(argv[1], "--events") == 0) return run_events(argv[2]);
  if (argc == 3 && strcmp(argv[1], "--float") == 0) return run_features(argv[2], PRINT_FLOAT);
  if (argc == 3 && strcmp(argv[1], "--time") == 0) return run_features(argv[2], PRINT_NOTHING);
  const int events = argc == 3 && strcmp(argv[1], "--stream") == 0 &&
                     strcmp(argv[2], "--events") == 0;
  if (events || (argc == 3 && strcmp(argv[1], "--net") == 0)) {
#ifdef MODEL_NET_UNSUPPORTED
    fprintf(stderr, "model_16k_net.h: the host tool cannot run this model's network: %s\n",
            MODEL_NET_UNSUPPORTED);
    return 1;
#endif
    if (!events) return run_features(argv[2], PRINT_NET);
    if (af_events_init(&live_events, &af_model_events) != AF_OK) {
      fprintf(stderr, "model_16k_frontend.h: event settings out of range\n");
      return 1;
    }
    sample_source source;
    if (open_raw(&source, stdin) != 0) return 1;
    return finish_output(run_stream(&source, "stdin", PRINT_EVENTS));
  }
  if (argc == 2 && argv[1][0] != '-') return run_features(argv[1], PRINT_INT8);
  if (argc == 2 && strcmp(argv[1], "--stream") == 0) {
    sample_source source;
    if (open_raw(&source, stdin) != 0) return 1;
    return finish_output(run_stream(&source, "stdin", PRINT_INT8));
  }
  fprintf(stderr, "usage: %s [--float | --time | --net] clip.wav | "
          "--stream [--events] < s16le.raw | --events probs.txt | --memory\n", argv[0]);
  return 1;
}
