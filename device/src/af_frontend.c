/* The feature pipeline of features.py in C. Each step names the Python
 * function it mirrors; float32 where numpy works in float32, double where
 * features.py sums in float64 or a sum decides a choice. */
#include "af_frontend.h"

#include <math.h>
#include <string.h>

#define AMIN_POWER 1e-10  /* librosa.amplitude_to_db's amin (1e-5), squared */
#define MEL_FLOOR 1e-12f  /* features.level_normalised_logmel's floor */
#define SHAPE_EPS 1e-12f  /* features.shape_statistics' eps */
#define N_SHAPE 6         /* flatness, centroid, bandwidth, rolloff, flux, level */

/* Samples as one or two pieces (a ring buffer wraps once). */
typedef struct {
  const int16_t* a;
  size_t na;
  const int16_t* b;
  size_t nb;
} samples_view;

static float sample_at(const samples_view* v, size_t i) {
  return (float)(i < v->na ? v->a[i] : v->b[i - v->na]) * (1.0f / 32768.0f);
}

static int is_power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

static int model_is_usable(const af_model* m) {
  if (m == NULL || m->feature_version != AF_FEATURE_VERSION ||
      !(m->patch_tolerance >= 0.0 && m->patch_tolerance < 1.0) || m->window == NULL || m->sample_rate <= 0 || m->hop_length <= 0 ||
      !is_power_of_two(m->n_fft) || m->n_features <= 0 || m->min_samples < 1 ||
      m->trim_frame_length <= 0 || m->trim_hop_length <= 0 || !(m->input_scale > 0.0f))
    return 0;
  if (m->preset == AF_PRESET_SEED) return m->n_features == m->n_fft / 2 + 1;
  if (m->n_mels <= 0 || m->mel_first == NULL || m->mel_count == NULL ||
      m->mel_offset == NULL || m->mel_weights == NULL)
    return 0;
  if (m->preset == AF_PRESET_LOGMEL)  /* its features are left in fft_in and fft_out */
    return m->n_features == 2 * m->n_mels + 2 * N_SHAPE && m->n_features <= 2 * m->n_fft;
  if (m->preset == AF_PRESET_LOGMEL_PATCH)
    return m->patch_frames > 0 && m->n_features == m->patch_frames * m->n_mels;
  return 0;
}

/* Scratch layout: doubles first (8-byte alignment), then floats. The
 * features are left in scratch (the patch rows of db, or fft_in and fft_out
 * for the statistics presets), so no buffer of their own is needed. */
typedef struct {
  double* energy;   /* [frames]: summed power of each frame */
  double* bins;     /* [n_fft/2 + 1]: seed preset's |STFT| sums */
  float* fft_in;    /* [n_fft] */
  float* fft_out;   /* [n_fft] */
  float* power;     /* [n_fft/2 + 1]: this frame's power; logmel: also the previous log power */
  float* db;        /* [max(frames, n_features / n_mels) * n_mels] */
  float* shape;     /* [frames * N_SHAPE]: logmel preset's per-frame statistics */
} scratch_layout;

static size_t layout(const af_model* m, size_t frames, char* base, scratch_layout* out) {
  const size_t bins = (size_t)m->n_fft / 2 + 1;
  const int mel = m->preset != AF_PRESET_SEED, stats = m->preset == AF_PRESET_LOGMEL;
  const size_t rows = mel && frames < (size_t)(m->n_features / m->n_mels)
                          ? (size_t)(m->n_features / m->n_mels) : frames;
  const size_t sizes[7] = {
      frames * sizeof(double), mel ? 0 : bins * sizeof(double),
      (size_t)m->n_fft * sizeof(float), (size_t)m->n_fft * sizeof(float),
      (stats ? 2 : 1) * bins * sizeof(float), mel ? rows * (size_t)m->n_mels * sizeof(float) : 0,
      stats ? frames * N_SHAPE * sizeof(float) : 0};
  void** slots[7] = {(void**)&out->energy, (void**)&out->bins, (void**)&out->fft_in,
                     (void**)&out->fft_out, (void**)&out->power, (void**)&out->db,
                     (void**)&out->shape};
  size_t used = 0;
  for (int i = 0; i < 7; ++i) {
    if (base != NULL) *slots[i] = base + used;
    used += sizes[i];
  }
  return used;
}

static size_t stft_frames(const af_model* m, size_t n) { return 1 + n / (size_t)m->hop_length; }

size_t af_scratch_bytes(const af_model* model, size_t max_samples) {
  scratch_layout unused;
  if (!model_is_usable(model)) return 0;
  return layout(model, stft_frames(model, max_samples), NULL, &unused);
}

/* features.trim_silence: frames of trim_frame_length samples every
 * trim_hop_length (the audio zero-padded by half a frame on both sides);
 * keep from the first to the last frame within trim_top_db of the loudest. */
static double block_energy(const samples_view* v, size_t n, long long lo, long long hi) {
  double sum = 0.0;
  for (long long i = lo < 0 ? 0 : lo; i < hi && i < (long long)n; ++i) {
    const double x = sample_at(v, (size_t)i);
    sum += x * x;
  }
  return sum;
}

static int is_loud(const af_model* m, double power, double loudest) {
  return 10.0 * log10(power > AMIN_POWER ? power : AMIN_POWER) -
             10.0 * log10(loudest > AMIN_POWER ? loudest : AMIN_POWER) > -m->trim_top_db;
}

/* Every frame's mean square, in order: a running sum of hop-long blocks
 * when frames are whole blocks (the usual 512 / 64), else frame by frame.
 * With loudest < 0 it finds the loudest frame; otherwise the first and
 * last frames loud enough (*first = frames when there is none). */
static double scan_frames(const af_model* m, const samples_view* v, size_t n, double loudest,
                          size_t* first, size_t* last) {
  const long long hop = m->trim_hop_length, length = m->trim_frame_length;
  const size_t frames = 1 + n / (size_t)hop;
  const int blocks = length % hop == 0 && (length / 2) % hop == 0;
  double running = blocks ? block_energy(v, n, -length / 2, length / 2) : 0.0, best = 0.0;
  *first = frames;
  *last = 0;
  for (size_t f = 0; f < frames; ++f) {
    const long long lo = (long long)f * hop - length / 2;
    if (blocks && f > 0)  /* slide by one block */
      running += block_energy(v, n, lo + length - hop, lo + length) - block_energy(v, n, lo - hop, lo);
    const double power = (blocks ? running : block_energy(v, n, lo, lo + length)) / (double)length;
    if (loudest < 0.0) {
      if (power > best) best = power;
    } else if (is_loud(m, power, loudest)) {
      if (*first == frames) *first = f;
      *last = f;
    }
  }
  return best;
}

static int trim(const af_model* m, const samples_view* v, size_t n, size_t* first, size_t* end) {
  size_t a, b;
  const double loudest = scan_frames(m, v, n, -1.0, &a, &b);
  scan_frames(m, v, n, loudest, &a, &b);
  if (a == 1 + n / (size_t)m->trim_hop_length) return AF_ERR_SILENT;
  const size_t hop = (size_t)m->trim_hop_length;
  *first = a * hop;
  *end = (b + 1) * hop < n ? (b + 1) * hop : n;
  return *end > *first ? AF_OK : AF_ERR_SILENT;
}

/* One frame of librosa's centred STFT (zero padding): power per bin. */
static int frame_spectrum(const af_model* m, const samples_view* v, size_t first, size_t len,
                          size_t t, af_rfft_fn rfft, void* ctx, const scratch_layout* s) {
  const long long lo = (long long)t * m->hop_length - m->n_fft / 2;
  for (int j = 0; j < m->n_fft; ++j) {
    const long long i = lo + j;
    s->fft_in[j] = (i >= 0 && i < (long long)len) ? sample_at(v, first + (size_t)i) * m->window[j]
                                                   : 0.0f;
  }
  if (rfft(ctx, s->fft_in, s->fft_out) != 0) return AF_ERR_FFT;
  const int half = m->n_fft / 2;
  s->power[0] = s->fft_out[0] * s->fft_out[0];
  s->power[half] = s->fft_out[1] * s->fft_out[1];
  for (int k = 1; k < half; ++k)
    s->power[k] = s->fft_out[2 * k] * s->fft_out[2 * k] + s->fft_out[2 * k + 1] * s->fft_out[2 * k + 1];
  return AF_OK;
}

/* features.shape_statistics for one frame (all but the level, which needs
 * the loudest frame first; rows[5] keeps the frame's total). */
static void frame_shape(const af_model* m, const float* power, float* log_power, size_t t,
                        float* rows) {
  const int bins = m->n_fft / 2 + 1;
  const double nyquist_khz = m->sample_rate / 2000.0;
  double total = 0.0, log_sum = 0.0, weighted = 0.0, flux = 0.0;
  for (int k = 0; k < bins; ++k) total += power[k];
  total += SHAPE_EPS;
  for (int k = 0; k < bins; ++k) {
    const double f = nyquist_khz * k / (bins - 1);
    log_sum += log((double)power[k] + SHAPE_EPS);
    weighted += f * power[k];
    const float log_now = log10f(power[k] + SHAPE_EPS);
    if (t > 0) flux += fabs((double)log_now - log_power[k]);
    log_power[k] = log_now;  /* the previous frame's, for the next flux */
  }
  const double centroid = weighted / total;
  double spread = 0.0, cumulative = 0.0, rolloff = 0.0;  /* numpy.argmax of all False: bin 0 */
  int rolled = 0;
  for (int k = 0; k < bins; ++k) {
    const double f = nyquist_khz * k / (bins - 1);
    spread += (f - centroid) * (f - centroid) * power[k];
    cumulative += power[k];
    if (!rolled && cumulative >= 0.85 * total) rolloff = f, rolled = 1;
  }
  rows[0] = (float)(exp(log_sum / bins) / (total / bins));
  rows[1] = (float)centroid;
  rows[2] = (float)sqrt(spread / total);
  rows[3] = (float)rolloff;
  rows[4] = (float)(t > 0 ? flux / bins : 0.0);
  rows[5] = (float)(10.0 * log10(total));  /* the level: relative to the loudest frame later */
}

/* features.level_normalised_logmel: floor top_db below the loudest cell,
 * subtract the mean. Returns the floored minimum (after the subtraction). */
static int normalise_levels(const af_model* m, float* db, size_t cells, float* minimum) {
  float loudest = db[0];
  for (size_t i = 1; i < cells; ++i)
    if (db[i] > loudest) loudest = db[i];
  const float floor_db = loudest - m->top_db;
  float lowest = loudest;
  double sum = 0.0;
  for (size_t i = 0; i < cells; ++i) {
    if (db[i] < floor_db) db[i] = floor_db;
    if (db[i] < lowest) lowest = db[i];
    sum += db[i];
  }
  if (loudest - lowest < 1e-6f) return AF_ERR_CONSTANT;
  const float mean = (float)(sum / (double)cells);
  for (size_t i = 0; i < cells; ++i) db[i] -= mean;
  *minimum = lowest - mean;
  return AF_OK;
}

/* features.loudest_patch_start */
static size_t loudest_patch_start(const double* energy, size_t frames, size_t patch,
                                  double patch_tolerance) {
  if (frames < patch) return 0;
  double run = 0.0, best = 0.0;
  for (size_t t = 0; t < patch; ++t) run += energy[t];
  best = run;
  for (size_t t = patch; t < frames; ++t) {  /* the largest sum first */
    run += energy[t] - energy[t - patch];
    if (run > best) best = run;
  }
  const double enough = best * (1.0 - patch_tolerance);
  run = 0.0;
  for (size_t t = 0; t < patch; ++t) run += energy[t];
  if (run >= enough) return 0;
  for (size_t t = patch; t < frames; ++t) {
    run += energy[t] - energy[t - patch];
    if (run >= enough) return t - patch + 1;
  }
  return 0;
}

/* Mean and (population) standard deviation of every stride-th value. */
static void mean_std(const float* values, size_t count, size_t stride, float* mean, float* std) {
  double sum = 0.0, squares = 0.0;
  for (size_t i = 0; i < count; ++i) sum += values[i * stride];
  const double average = sum / (double)count;
  for (size_t i = 0; i < count; ++i) {
    const double d = values[i * stride] - average;
    squares += d * d;
  }
  *mean = (float)average;
  *std = (float)sqrt(squares / (double)count);
}

/* features.minmax_normalise of the mean |STFT| (seed preset), into out. */
static int seed_features(const scratch_layout* s, int bins, size_t frames, float* out) {
  double low = INFINITY, high = -INFINITY;
  for (int k = 0; k < bins; ++k) {
    out[k] = (float)(s->bins[k] / (double)frames);
    if (out[k] < low) low = out[k];
    if (out[k] > high) high = out[k];
  }
  if (!(high - low > 1e-12 * (fabs(high) > 1e-30 ? fabs(high) : 1e-30))) return AF_ERR_CONSTANT;
  for (int k = 0; k < bins; ++k) out[k] = (float)((out[k] - low) / (high - low));
  return AF_OK;
}

/* features.logmel_statistics: per-band mean and std of the normalised
 * log-mel cells, then the shape statistics' means and stds, into out. */
static void logmel_statistics(const af_model* m, const scratch_layout* s, size_t frames,
                              float* out) {
  float loudest_level = -INFINITY;
  for (size_t t = 0; t < frames; ++t)
    if (s->shape[t * N_SHAPE + 5] > loudest_level) loudest_level = s->shape[t * N_SHAPE + 5];
  for (size_t t = 0; t < frames; ++t) {  /* level relative to the loudest frame, floor -80 dB */
    const float level = s->shape[t * N_SHAPE + 5] - loudest_level;
    s->shape[t * N_SHAPE + 5] = level > -80.0f ? level : -80.0f;
  }
  for (int b = 0; b < m->n_mels; ++b)
    mean_std(s->db + b, frames, (size_t)m->n_mels, &out[b], &out[m->n_mels + b]);
  for (int i = 0; i < N_SHAPE; ++i)
    mean_std(s->shape + i, frames, N_SHAPE, &out[2 * m->n_mels + i],
             &out[2 * m->n_mels + N_SHAPE + i]);
}

/* The features of n samples, left in scratch; *result points at them. */
static int features_of_view(const af_model* m, const samples_view* v, size_t n, af_rfft_fn rfft,
                            void* ctx, void* scratch, size_t scratch_bytes, const float** result) {
  size_t nonzero = 0;
  for (size_t i = 0; i < n && !nonzero; ++i) nonzero = (i < v->na ? v->a[i] : v->b[i - v->na]) != 0;
  if (!nonzero) return AF_ERR_SILENT;  /* features.py's checks, in its order */
  if (n < (size_t)m->min_samples) return AF_ERR_TOO_SHORT;
  size_t first = 0, end = n;
  if (m->trim) {
    const int status = trim(m, v, n, &first, &end);
    if (status != AF_OK) return status;
  }
  const size_t len = end - first, frames = stft_frames(m, len);
  scratch_layout s;
  if (((uintptr_t)scratch & 7u) != 0) return AF_ERR_ARGUMENT;  /* doubles live in it */
  if (layout(m, frames, NULL, &s) > scratch_bytes) return AF_ERR_BUFFER;
  layout(m, frames, (char*)scratch, &s);
  const int bins = m->n_fft / 2 + 1;
  if (m->preset == AF_PRESET_SEED)
    for (int k = 0; k < bins; ++k) s.bins[k] = 0.0;
  for (size_t t = 0; t < frames; ++t) {
    const int status = frame_spectrum(m, v, first, len, t, rfft, ctx, &s);
    if (status != AF_OK) return status;
    if (m->preset == AF_PRESET_SEED) {
      for (int k = 0; k < bins; ++k) s.bins[k] += sqrtf(s.power[k]);
      continue;
    }
    double energy = 0.0;
    for (int k = 0; k < bins; ++k) energy += s.power[k];
    s.energy[t] = energy;
    for (int b = 0; b < m->n_mels; ++b) {
      const float* w = m->mel_weights + m->mel_offset[b];
      const float* p = s.power + m->mel_first[b];
      float mel = 0.0f;
      for (int k = 0; k < m->mel_count[b]; ++k) mel += w[k] * p[k];
      s.db[t * (size_t)m->n_mels + (size_t)b] = 10.0f * log10f(mel > MEL_FLOOR ? mel : MEL_FLOOR);
    }
    if (m->preset == AF_PRESET_LOGMEL) frame_shape(m, s.power, s.power + bins, t, s.shape + t * N_SHAPE);
  }
  if (m->preset == AF_PRESET_SEED) {
    *result = s.fft_in;
    return seed_features(&s, bins, frames, s.fft_in);
  }
  float minimum;
  const int status = normalise_levels(m, s.db, frames * (size_t)m->n_mels, &minimum);
  if (status != AF_OK) return status;
  if (m->preset == AF_PRESET_LOGMEL_PATCH) {
    /* the patch is rows start.. of db, frame-major like the features;
     * a short clip's missing rows are padded with the floor in place */
    const size_t patch = (size_t)m->patch_frames;
    const size_t start = loudest_patch_start(s.energy, frames, patch, m->patch_tolerance);
    for (size_t i = frames * (size_t)m->n_mels; i < patch * (size_t)m->n_mels; ++i) s.db[i] = minimum;
    *result = s.db + start * (size_t)m->n_mels;
    return AF_OK;
  }
  *result = s.fft_in;  /* fft_out follows it: room for the statistics */
  logmel_statistics(m, &s, frames, s.fft_in);
  return AF_OK;
}

int af_features(const af_model* model, const int16_t* samples, size_t n, af_rfft_fn rfft,
                void* rfft_context, void* scratch, size_t scratch_bytes, float* out,
                size_t out_len) {
  if (model == NULL || samples == NULL || rfft == NULL || scratch == NULL || out == NULL)
    return AF_ERR_NULL;
  if (!model_is_usable(model)) return AF_ERR_UNSUPPORTED;
  if (n == 0) return AF_ERR_ARGUMENT;
  if (out_len < (size_t)model->n_features || scratch_bytes < af_scratch_bytes(model, n))
    return AF_ERR_BUFFER;
  const samples_view view = {samples, n, NULL, 0};
  const float* result;
  const int status = features_of_view(model, &view, n, rfft, rfft_context, scratch, scratch_bytes,
                                      &result);
  if (status == AF_OK) memcpy(out, result, sizeof(float) * (size_t)model->n_features);
  return status;
}

int af_quantise(const af_model* model, const float* features, size_t n, int8_t* out,
                size_t out_len) {
  if (model == NULL || features == NULL || out == NULL) return AF_ERR_NULL;
  if (n != (size_t)model->n_features) return AF_ERR_ARGUMENT;
  if (out_len < n) return AF_ERR_BUFFER;
  for (size_t i = 0; i < n; ++i)  /* NaN or infinity has no int8 value: refuse, write nothing */
    if (!isfinite(features[i])) return AF_ERR_ARGUMENT;
  for (size_t i = 0; i < n; ++i) {
    float x = features[i];
    if (model->feature_mean != NULL) x = (x - model->feature_mean[i]) / model->feature_std[i];
    const float q = rintf(x / model->input_scale) + (float)model->input_zero_point;
    out[i] = (int8_t)(q < -128.0f ? -128 : q > 127.0f ? 127 : (int)q);
  }
  return AF_OK;
}

/* ------------------------------------------------------------------------
 * Streaming (pipeline/events.py's stream_windows). */

int af_stream_init(af_stream* stream, const af_model* model, int16_t* ring, size_t ring_len) {
  if (stream == NULL || model == NULL || ring == NULL) return AF_ERR_NULL;
  if (!model_is_usable(model) || model->window_samples <= 0 || model->hop_samples <= 0 ||
      model->hop_samples > model->window_samples)
    return AF_ERR_UNSUPPORTED;
  if (ring_len < (size_t)model->window_samples) return AF_ERR_BUFFER;
  stream->model = model;
  stream->ring = ring;
  stream->ring_len = ring_len;
  af_stream_reset(stream);
  return AF_OK;
}

void af_stream_reset(af_stream* stream) {
  if (stream == NULL) return;
  stream->total = stream->next_start = stream->ready_start = 0;
  stream->ready_len = 0;
  stream->last_start = -1;
  stream->finished = 0;
}

int af_stream_push(af_stream* stream, const int16_t* samples, size_t n, size_t* used) {
  if (stream == NULL || used == NULL || (samples == NULL && n > 0)) return AF_ERR_NULL;
  *used = 0;
  if (stream->ready_len > 0 || stream->finished) return AF_ERR_STATE;
  const uint64_t window_end = stream->next_start + (uint64_t)stream->model->window_samples;
  while (*used < n) {  /* copy in runs: up to the ring's end or the window's end */
    const size_t at = (size_t)(stream->total % stream->ring_len);
    size_t run = n - *used;
    if (run > stream->ring_len - at) run = stream->ring_len - at;
    if (run > window_end - stream->total) run = (size_t)(window_end - stream->total);
    memcpy(stream->ring + at, samples + *used, run * sizeof(int16_t));
    *used += run;
    stream->total += run;
    if (stream->total == window_end) {
      stream->ready_start = stream->next_start;
      stream->ready_len = (size_t)stream->model->window_samples;
      return AF_WINDOW_READY;
    }
  }
  return AF_OK;
}

int af_stream_finish(af_stream* stream) {
  if (stream == NULL) return AF_ERR_NULL;
  if (stream->ready_len > 0 || stream->finished) return AF_ERR_STATE;
  stream->finished = 1;
  const uint64_t window = (uint64_t)stream->model->window_samples;
  if (stream->total == 0) return AF_ERR_ARGUMENT;
  if (stream->last_start < 0) {  /* no longer than a window: one window of all of it */
    stream->ready_start = 0;
    stream->ready_len = (size_t)stream->total;
    return AF_WINDOW_READY;
  }
  if ((uint64_t)stream->last_start + window < stream->total) {  /* ends at the end */
    stream->ready_start = stream->total - window;
    stream->ready_len = (size_t)window;
    return AF_WINDOW_READY;
  }
  return AF_OK;
}

int af_stream_window(af_stream* stream, af_rfft_fn rfft, void* rfft_context, void* scratch,
                     size_t scratch_bytes, int8_t* input, size_t input_len, float* features,
                     uint64_t* start, double* centre_s) {
  if (stream == NULL || rfft == NULL || scratch == NULL || input == NULL) return AF_ERR_NULL;
  if (stream->ready_len == 0) return AF_ERR_STATE;
  const af_model* m = stream->model;
  if (input_len < (size_t)m->n_features || scratch_bytes < af_scratch_bytes(m, stream->ready_len))
    return AF_ERR_BUFFER;  /* the window stays ready */
  const size_t len = stream->ready_len, offset = (size_t)(stream->ready_start % stream->ring_len);
  const size_t first_piece = offset + len <= stream->ring_len ? len : stream->ring_len - offset;
  const samples_view view = {stream->ring + offset, first_piece, stream->ring, len - first_piece};
  if (start != NULL) *start = stream->ready_start;
  if (centre_s != NULL) *centre_s = ((double)stream->ready_start + (double)len / 2.0) / m->sample_rate;
  const float* result;
  int status = features_of_view(m, &view, len, rfft, rfft_context, scratch, scratch_bytes, &result);
  if (status == AF_OK) {
    if (features != NULL) memcpy(features, result, sizeof(float) * (size_t)m->n_features);
    status = af_quantise(m, result, (size_t)m->n_features, input, input_len);
  }
  stream->ready_len = 0;
  if (!stream->finished) {
    stream->last_start = (int64_t)stream->ready_start;
    stream->next_start += (uint64_t)m->hop_samples;
  }
  return status;
}
