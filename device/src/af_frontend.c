/* The feature pipeline of features.py in C. Each step names the Python
 * function it mirrors. Float32 only (a Cortex-M4F has no double-precision
 * FPU; -Wdouble-promotion keeps it so): trimming sums squared int16 samples
 * exactly in integers, and long float sums are compensated (Kahan), so they
 * stay as close to numpy's float64 or pairwise float32 sums as rounding
 * allows. */
#include "af_frontend.h"

#include <math.h>
#include <string.h>

#define AMIN_POWER 1e-10f /* librosa.amplitude_to_db's amin (1e-5), squared */
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

static int is_power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

/* Compensated float sum: the error stays near one rounding of the total
 * however many terms there are (a plain float sum of a window's 5,000
 * log-mel cells would drift by more than an int8 input step). */
typedef struct {
  float sum, carry;
} float_sum;

static void add_to(float_sum* s, float x) {
  const float y = x - s->carry, t = s->sum + y;
  s->carry = (t - s->sum) - y;
  s->sum = t;
}

static int model_is_usable(const af_model* m) {
  if (m == NULL || m->feature_version != AF_FEATURE_VERSION ||
      !(m->patch_tolerance >= 0.0f && m->patch_tolerance < 1.0f) || !(m->level_floor_db > 0.0f) || m->window == NULL || m->sample_rate <= 0 || m->hop_length <= 0 ||
      !is_power_of_two(m->n_fft) || m->n_features <= 0 || m->min_samples < 1 ||
      m->trim_frame_length <= 0 || m->trim_hop_length <= 0 || !(m->input_scale > 0.0f))
    return 0;
  if (m->preset == AF_PRESET_SEED) return m->n_features == m->n_fft / 2 + 1;
  if (m->n_mels <= 0 || m->mel_first == NULL || m->mel_count == NULL ||
      m->mel_offset == NULL || m->mel_weights == NULL)
    return 0;
  if (m->preset == AF_PRESET_LOGMEL)  /* its features are left in fft_in and fft_out */
    return m->n_features == 2 * m->n_mels + 2 * N_SHAPE && m->n_features <= 2 * m->n_fft;
  if (m->preset == AF_PRESET_LOGMEL_PATCH || m->preset == AF_PRESET_LOGMEL_STREAM)
    return m->patch_frames > 0 && m->n_features == m->patch_frames * m->n_mels;
  return 0;
}

/* Scratch layout, all floats. The features are left in scratch (the patch
 * rows of db, or fft_in and fft_out for the statistics presets), so no
 * buffer of their own is needed. */
typedef struct {
  uint64_t* exact;  /* [frames]: logmel_stream's frame energies (first: 8-byte aligned) */
  float* energy;    /* [frames]: summed power of each frame */
  float* bins;      /* [2 * (n_fft/2 + 1)]: seed preset's |STFT| sums and their carries */
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
  const size_t sizes[8] = {
      m->preset == AF_PRESET_LOGMEL_STREAM ? frames * sizeof(uint64_t) : 0,
      frames * sizeof(float), mel ? 0 : 2 * bins * sizeof(float),
      (size_t)m->n_fft * sizeof(float), (size_t)m->n_fft * sizeof(float),
      (stats ? 2 : 1) * bins * sizeof(float), mel ? rows * (size_t)m->n_mels * sizeof(float) : 0,
      stats ? frames * N_SHAPE * sizeof(float) : 0};
  void** slots[8] = {(void**)&out->exact, (void**)&out->energy, (void**)&out->bins,
                     (void**)&out->fft_in,
                     (void**)&out->fft_out, (void**)&out->power, (void**)&out->db,
                     (void**)&out->shape};
  size_t used = 0;
  for (int i = 0; i < 8; ++i) {
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
 * keep from the first to the last frame within trim_top_db of the loudest.
 * A frame's energy is its sum of squared int16 samples: exact in 64 bits,
 * the same value features.py's float64 sums reach. */
static uint64_t squares(const int16_t* x, size_t count) {
  uint64_t sum = 0;
  size_t i = 0;
  for (; i + 2 <= count; i += 2)  /* two squares fit 32 bits (each at most 2^30) */
    sum += (uint32_t)((int32_t)x[i] * x[i]) + (uint32_t)((int32_t)x[i + 1] * x[i + 1]);
  if (i < count) sum += (uint32_t)((int32_t)x[i] * x[i]);
  return sum;
}

static uint64_t block_energy(const samples_view* v, size_t n, long long lo, long long hi) {
  const size_t a = lo < 0 ? 0 : (size_t)lo;
  const size_t b = hi < 0 ? 0 : hi < (long long)n ? (size_t)hi : n;
  if (a >= b) return 0;
  if (b <= v->na) return squares(v->a + a, b - a);  /* within one piece of the ring */
  if (a >= v->na) return squares(v->b + (a - v->na), b - a);
  return squares(v->a + a, v->na - a) + squares(v->b, b - v->na);
}

/* Python's test 10 log10(max(p, amin) / max(p_max, amin)) > -top_db on
 * energies e = p * 2^30 * frame_length. With r = 10^(top_db / 10) a whole
 * number (top_db a multiple of 10, as the default 20) it is exact: a frame
 * at or above the floor is loud when e > floor(max(e_max, floor) / r), and
 * one below it when floor * r > e_max. Otherwise the same test in float. */
typedef struct {
  uint64_t floor;      /* smallest energy above amin */
  uint64_t threshold;  /* an energy at or above floor is loud when greater than this */
  int quiet_is_loud;   /* whether an energy below the floor is loud */
} loudness_rule;

/* 10^(top_db / 10) when that is a whole number that fits (top_db a
 * multiple of 10 up to 180), else 0. */
static uint64_t whole_ratio(float top_db) {
  const float tens = top_db / 10.0f;
  uint64_t ratio = 0;
  if (tens >= 1.0f && tens <= 18.0f && tens == floorf(tens)) {
    ratio = 1;
    for (int i = 0; i < (int)tens; ++i) ratio *= 10u;
  }
  return ratio;
}

static loudness_rule loudness_rule_for(const af_model* m, uint64_t loudest) {
  const float floor_energy = AMIN_POWER * 1073741824.0f * (float)m->trim_frame_length;
  const float tens = m->trim_top_db / 10.0f;
  const uint64_t ratio = whole_ratio(m->trim_top_db);
  loudness_rule rule;
  rule.floor = (uint64_t)ceilf(floor_energy);
  const float reference = (float)loudest > floor_energy ? (float)loudest : floor_energy;
  rule.quiet_is_loud = floor_energy * powf(10.0f, tens) > reference;
  if (ratio && loudest >= rule.floor)
    rule.threshold = loudest / ratio;
  else
    rule.threshold = (uint64_t)floorf(reference / powf(10.0f, tens));
  return rule;
}

static int is_loud(const loudness_rule* rule, uint64_t energy) {
  return energy >= rule->floor ? energy > rule->threshold : rule->quiet_is_loud;
}

/* Every frame's energy, in order: a running sum of hop-long blocks when
 * frames are whole blocks (the usual 512 / 64), else frame by frame. With
 * rule NULL it finds the loudest frame's; otherwise the first and last
 * frames loud enough (*first = frames when there is none). */
static uint64_t scan_frames(const af_model* m, const samples_view* v, size_t n,
                            const loudness_rule* rule, size_t* first, size_t* last) {
  const long long hop = m->trim_hop_length, length = m->trim_frame_length;
  const size_t frames = 1 + n / (size_t)hop;
  const int blocks = length % hop == 0 && (length / 2) % hop == 0;
  uint64_t running = blocks ? block_energy(v, n, -length / 2, length / 2) : 0, best = 0;
  *first = frames;
  *last = 0;
  for (size_t f = 0; f < frames; ++f) {
    const long long lo = (long long)f * hop - length / 2;
    if (blocks && f > 0)  /* slide by one block */
      running += block_energy(v, n, lo + length - hop, lo + length) - block_energy(v, n, lo - hop, lo);
    const uint64_t energy = blocks ? running : block_energy(v, n, lo, lo + length);
    if (rule == NULL) {
      if (energy > best) best = energy;
    } else if (is_loud(rule, energy)) {
      if (*first == frames) *first = f;
      *last = f;
    }
  }
  return best;
}

static int trim(const af_model* m, const samples_view* v, size_t n, size_t* first, size_t* end) {
  size_t a, b;
  const loudness_rule rule = loudness_rule_for(m, scan_frames(m, v, n, NULL, &a, &b));
  scan_frames(m, v, n, &rule, &a, &b);
  if (a == 1 + n / (size_t)m->trim_hop_length) return AF_ERR_SILENT;
  const size_t hop = (size_t)m->trim_hop_length;
  *first = a * hop;
  *end = (b + 1) * hop < n ? (b + 1) * hop : n;
  return *end > *first ? AF_OK : AF_ERR_SILENT;
}

/* Power per bin of |FFT(window x)|^2 of fft_in, which holds the frame. */
static int frame_power(const af_model* m, af_rfft_fn rfft, void* ctx, float* fft_in,
                       float* fft_out, float* power) {
  if (rfft(ctx, fft_in, fft_out) != 0) return AF_ERR_FFT;
  const int half = m->n_fft / 2;
  power[0] = fft_out[0] * fft_out[0];
  power[half] = fft_out[1] * fft_out[1];
  for (int k = 1; k < half; ++k)
    power[k] = fft_out[2 * k] * fft_out[2 * k] + fft_out[2 * k + 1] * fft_out[2 * k + 1];
  return AF_OK;
}

/* One mel row in dB (features.level_normalised_logmel before the floor). */
static void mel_row(const af_model* m, const float* power, float* row) {
  for (int b = 0; b < m->n_mels; ++b) {
    const float* w = m->mel_weights + m->mel_offset[b];
    const float* p = power + m->mel_first[b];
    float mel = 0.0f;
    for (int k = 0; k < m->mel_count[b]; ++k) mel += w[k] * p[k];
    row[b] = 10.0f * log10f(mel > MEL_FLOOR ? mel : MEL_FLOOR);
  }
}

/* The frame of n_fft samples from sample lo of the trimmed audio (zeros
 * outside it): power per bin. */
static int frame_spectrum(const af_model* m, const samples_view* v, size_t first, size_t len,
                          long long lo, af_rfft_fn rfft, void* ctx, const scratch_layout* s) {
  /* samples j in [j0, j1) of the frame lie inside the trimmed audio */
  const int j0 = lo < 0 ? (int)-lo : 0;
  const int j1 = lo + m->n_fft <= (long long)len ? m->n_fft : (int)((long long)len - lo);
  for (int j = 0; j < j0 && j < m->n_fft; ++j) s->fft_in[j] = 0.0f;  /* outside the audio: zeros */
  for (int j = j1 > j0 ? j1 : j0; j < m->n_fft; ++j) s->fft_in[j] = 0.0f;
  for (int j = j0; j < j1;) {  /* in runs within one piece of the ring */
    const size_t i = first + (size_t)(lo + j);
    const int16_t* x = i < v->na ? v->a + i : v->b + (i - v->na);
    const size_t left = i < v->na ? v->na - i : v->nb - (i - v->na);
    const int run = (size_t)(j1 - j) < left ? j1 - j : (int)left;
    for (int k = 0; k < run; ++k)
      s->fft_in[j + k] = (float)x[k] * (1.0f / 32768.0f) * m->window[j + k];
    j += run;
  }
  return frame_power(m, rfft, ctx, s->fft_in, s->fft_out, s->power);
}

/* features.shape_statistics for one frame (all but the level, which needs
 * the loudest frame first; rows[5] keeps the frame's total). */
static void frame_shape(const af_model* m, const float* power, float* log_power, size_t t,
                        float* rows) {
  const int bins = m->n_fft / 2 + 1;
  const float khz_per_bin = (float)m->sample_rate / 2000.0f / (float)(bins - 1);
  float_sum total = {0.0f, 0.0f}, log_sum = {0.0f, 0.0f}, weighted = {0.0f, 0.0f},
            flux = {0.0f, 0.0f};
  for (int k = 0; k < bins; ++k) {
    add_to(&total, power[k]);
    add_to(&log_sum, logf(power[k] + SHAPE_EPS));
    add_to(&weighted, khz_per_bin * (float)k * power[k]);
    const float log_now = log10f(power[k] + SHAPE_EPS);
    if (t > 0) add_to(&flux, fabsf(log_now - log_power[k]));
    log_power[k] = log_now;  /* the previous frame's, for the next flux */
  }
  const float sum = total.sum + SHAPE_EPS, centroid = weighted.sum / sum;
  float_sum spread = {0.0f, 0.0f}, cumulative = {0.0f, 0.0f};
  float rolloff = 0.0f;  /* numpy.argmax of all False: bin 0 */
  int rolled = 0;
  for (int k = 0; k < bins; ++k) {
    const float f = khz_per_bin * (float)k;
    add_to(&spread, (f - centroid) * (f - centroid) * power[k]);
    add_to(&cumulative, power[k]);
    if (!rolled && cumulative.sum >= 0.85f * sum) rolloff = f, rolled = 1;
  }
  rows[0] = expf(log_sum.sum / (float)bins) / (sum / (float)bins);
  rows[1] = centroid;
  rows[2] = sqrtf(spread.sum / sum);
  rows[3] = rolloff;
  rows[4] = t > 0 ? flux.sum / (float)bins : 0.0f;
  rows[5] = 10.0f * log10f(sum);  /* the level: relative to the loudest frame later */
}

/* features.level_normalised_logmel: floor top_db below the loudest cell,
 * subtract the mean. Returns the floored minimum (after the subtraction). */
static int normalise_levels(const af_model* m, float* db, size_t cells, float* minimum) {
  float loudest = db[0];
  for (size_t i = 1; i < cells; ++i)
    if (db[i] > loudest) loudest = db[i];
  const float floor_db = loudest - m->top_db;
  float lowest = loudest;
  float_sum sum = {0.0f, 0.0f};
  for (size_t i = 0; i < cells; ++i) {
    if (db[i] < floor_db) db[i] = floor_db;
    if (db[i] < lowest) lowest = db[i];
    add_to(&sum, db[i]);
  }
  if (loudest - lowest < 1e-6f) return AF_ERR_CONSTANT;
  const float mean = sum.sum / (float)cells;
  for (size_t i = 0; i < cells; ++i) db[i] -= mean;
  *minimum = lowest - mean;
  return AF_OK;
}

/* Summed energy of frames [start, start + patch). Each run is summed
 * afresh (not slid), so every run's sum carries one rounding, not many. */
static float run_energy(const float* energy, size_t start, size_t patch) {
  float_sum run = {0.0f, 0.0f};
  for (size_t t = start; t < start + patch; ++t) add_to(&run, energy[t]);
  return run.sum;
}

/* features.loudest_patch_start */
static size_t loudest_patch_start(const float* energy, size_t frames, size_t patch,
                                  float patch_tolerance) {
  if (frames < patch) return 0;
  float best = 0.0f;
  for (size_t t = 0; t + patch <= frames; ++t) {
    const float run = run_energy(energy, t, patch);
    if (run > best) best = run;
  }
  const float enough = best * (1.0f - patch_tolerance);
  for (size_t t = 0; t + patch <= frames; ++t)
    if (run_energy(energy, t, patch) >= enough) return t;
  return 0;
}

/* Mean and (population) standard deviation of every stride-th value. */
static void mean_std(const float* values, size_t count, size_t stride, float* mean, float* std) {
  float_sum sum = {0.0f, 0.0f}, squares = {0.0f, 0.0f};
  for (size_t i = 0; i < count; ++i) add_to(&sum, values[i * stride]);
  const float average = sum.sum / (float)count;
  for (size_t i = 0; i < count; ++i) {
    const float d = values[i * stride] - average;
    add_to(&squares, d * d);
  }
  *mean = average;
  *std = sqrtf(squares.sum / (float)count);
}

/* features.minmax_normalise of the mean |STFT| (seed preset), into out. */
static int seed_features(const scratch_layout* s, int bins, size_t frames, float* out) {
  float low = INFINITY, high = -INFINITY;
  for (int k = 0; k < bins; ++k) {
    out[k] = s->bins[k] / (float)frames;
    if (out[k] < low) low = out[k];
    if (out[k] > high) high = out[k];
  }
  if (!(high - low > 1e-12f * (fabsf(high) > 1e-30f ? fabsf(high) : 1e-30f)))
    return AF_ERR_CONSTANT;
  for (int k = 0; k < bins; ++k) out[k] = (out[k] - low) / (high - low);
  return AF_OK;
}

/* features.logmel_statistics: per-band mean and std of the normalised
 * log-mel cells, then the shape statistics' means and stds, into out. */
static void logmel_statistics(const af_model* m, const scratch_layout* s, size_t frames,
                              float* out) {
  float loudest_level = -INFINITY;
  for (size_t t = 0; t < frames; ++t)
    if (s->shape[t * N_SHAPE + 5] > loudest_level) loudest_level = s->shape[t * N_SHAPE + 5];
  for (size_t t = 0; t < frames; ++t) {  /* level relative to the loudest frame, floored */
    const float level = s->shape[t * N_SHAPE + 5] - loudest_level;
    s->shape[t * N_SHAPE + 5] = level > -m->level_floor_db ? level : -m->level_floor_db;
  }
  for (int b = 0; b < m->n_mels; ++b)
    mean_std(s->db + b, frames, (size_t)m->n_mels, &out[b], &out[m->n_mels + b]);
  for (int i = 0; i < N_SHAPE; ++i)
    mean_std(s->shape + i, frames, N_SHAPE, &out[2 * m->n_mels + i],
             &out[2 * m->n_mels + N_SHAPE + i]);
}

/* The features of n samples, left in scratch; *result points at them. */
static int check_clip(const af_model* m, const samples_view* v, size_t n) {
  size_t nonzero = 0;
  for (size_t i = 0; i < n && !nonzero; ++i) nonzero = (i < v->na ? v->a[i] : v->b[i - v->na]) != 0;
  if (!nonzero) return AF_ERR_SILENT;  /* features.py's checks, in its order */
  return n < (size_t)m->min_samples ? AF_ERR_TOO_SHORT : AF_OK;
}

static int features_of_view(const af_model* m, const samples_view* v, size_t n, af_rfft_fn rfft,
                            void* ctx, void* scratch, size_t scratch_bytes, const float** result) {
  const int checked = check_clip(m, v, n);
  if (checked != AF_OK) return checked;
  size_t first = 0, end = n;
  if (m->trim) {
    const int status = trim(m, v, n, &first, &end);
    if (status != AF_OK) return status;
  }
  const size_t len = end - first, frames = stft_frames(m, len);
  scratch_layout s;
  if (((uintptr_t)scratch & 7u) != 0) return AF_ERR_ARGUMENT;  /* as documented: 8 bytes */
  if (layout(m, frames, NULL, &s) > scratch_bytes) return AF_ERR_BUFFER;
  layout(m, frames, (char*)scratch, &s);
  const int bins = m->n_fft / 2 + 1;
  if (m->preset == AF_PRESET_SEED)
    for (int k = 0; k < 2 * bins; ++k) s.bins[k] = 0.0f;
  for (size_t t = 0; t < frames; ++t) {
    const long long lo = (long long)t * m->hop_length - m->n_fft / 2;  /* centred frames */
    const int status = frame_spectrum(m, v, first, len, lo, rfft, ctx, &s);
    if (status != AF_OK) return status;
    if (m->preset == AF_PRESET_SEED) {
      for (int k = 0; k < bins; ++k) {  /* a float_sum per bin, stored as sum, carry */
        float_sum bin = {s.bins[k], s.bins[bins + k]};
        add_to(&bin, sqrtf(s.power[k]));
        s.bins[k] = bin.sum;
        s.bins[bins + k] = bin.carry;
      }
      continue;
    }
    float_sum energy = {0.0f, 0.0f};
    for (int k = 0; k < bins; ++k) add_to(&energy, s.power[k]);
    s.energy[t] = energy.sum;
    mel_row(m, s.power, s.db + t * (size_t)m->n_mels);
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

/* ------------------------------------------------------------------------
 * logmel_stream (features.logmel_stream): whole frames of one uncentred
 * STFT grid, so a stream computes each frame once, as its samples arrive,
 * and keeps mel rows instead of samples. */

static size_t grid_frames(const af_model* m, size_t n) {
  const size_t n_fft = (size_t)m->n_fft;
  return n <= n_fft ? 1 : 1 + (n - n_fft) / (size_t)m->hop_length;
}

/* Frames [0, count) of a window or clip: frame t is slot (origin + t) % slots. */
typedef struct {
  const float* rows;       /* [slots * n_mels]: dB per band */
  const uint64_t* energy;  /* [slots]: sum of squared samples */
  size_t slots, origin, count;
} frame_run;

static const float* row_of(const af_model* m, const frame_run* r, size_t t) {
  return r->rows + ((r->origin + t) % r->slots) * (size_t)m->n_mels;
}

static uint64_t energy_of(const frame_run* r, size_t t) {
  return r->energy[(r->origin + t) % r->slots];
}

static int8_t quantise_value(const af_model* m, size_t i, float x) {
  if (m->feature_mean != NULL) x = (x - m->feature_mean[i]) / m->feature_std[i];
  const float q = rintf(x / m->input_scale) + (float)m->input_zero_point;
  return (int8_t)(q < -128.0f ? -128 : q > 127.0f ? 127 : (int)q);
}

/* features.loud_frames: the first and last frame whose energy times
 * 10^(top_db / 10) exceeds the loudest's (exact for whole tens of dB). */
static int loud_range(const af_model* m, const frame_run* r, size_t* first, size_t* last) {
  uint64_t loudest = 0;
  for (size_t t = 0; t < r->count; ++t)
    if (energy_of(r, t) > loudest) loudest = energy_of(r, t);
  if (loudest == 0) return AF_ERR_SILENT;
  *first = r->count;
  *last = 0;
  const uint64_t ratio = m->trim ? whole_ratio(m->trim_top_db) : 0;
  const float ratio_f = powf(10.0f, m->trim_top_db / 10.0f);
  for (size_t t = 0; t < r->count; ++t) {
    const uint64_t e = energy_of(r, t);
    const int loud = !m->trim || (ratio ? e > loudest / ratio : (float)e * ratio_f > (float)loudest);
    if (loud && *first == r->count) *first = t;
    if (loud) *last = t;
  }
  return AF_OK;  /* the loudest frame is always loud */
}

/* features.logmel_stream's steps 2-4 on a run of frames (only read): the
 * patch as features and/or int8 input (either may be NULL). */
static int stream_patch(const af_model* m, const frame_run* r, float* features, int8_t* input) {
  size_t first, last;
  const int status = loud_range(m, r, &first, &last);
  if (status != AF_OK) return status;
  const size_t bands = (size_t)m->n_mels, kept = last - first + 1, patch = (size_t)m->patch_frames;
  float loudest = -INFINITY;
  for (size_t t = first; t <= last; ++t)
    for (size_t b = 0; b < bands; ++b)
      if (row_of(m, r, t)[b] > loudest) loudest = row_of(m, r, t)[b];
  const float floor_db = loudest - m->top_db;
  float lowest = loudest;
  float_sum sum = {0.0f, 0.0f};
  for (size_t t = first; t <= last; ++t)
    for (size_t b = 0; b < bands; ++b) {
      const float v = row_of(m, r, t)[b] < floor_db ? floor_db : row_of(m, r, t)[b];
      if (v < lowest) lowest = v;
      add_to(&sum, v);
    }
  if (loudest - lowest < 1e-6f) return AF_ERR_CONSTANT;
  const float mean = sum.sum / (float)(kept * bands), minimum = lowest - mean;
  size_t start = first;
  if (kept >= patch) {  /* the first run with the largest (exact) energy */
    uint64_t run = 0;
    for (size_t t = first; t < first + patch; ++t) run += energy_of(r, t);
    uint64_t best = run;
    for (size_t t = first + patch; t <= last; ++t) {
      run = run + energy_of(r, t) - energy_of(r, t - patch);
      if (run > best) best = run, start = t - patch + 1;
    }
  }
  for (size_t i = 0; i < patch; ++i)
    for (size_t b = 0; b < bands; ++b) {
      float v = minimum;  /* past the kept frames: the floor, as features.py pads */
      if (i < kept) {
        const float db = row_of(m, r, start + i)[b];
        v = (db < floor_db ? floor_db : db) - mean;
      }
      if (features != NULL) features[i * bands + b] = v;
      if (input != NULL) input[i * bands + b] = quantise_value(m, i * bands + b, v);
    }
  return AF_OK;
}

/* A whole clip: every frame into scratch, then the patch into out. */
static int clip_frames(const af_model* m, const samples_view* v, size_t n, af_rfft_fn rfft,
                       void* ctx, void* scratch, size_t scratch_bytes, float* out) {
  const int checked = check_clip(m, v, n);
  if (checked != AF_OK) return checked;
  const size_t frames = grid_frames(m, n), bands = (size_t)m->n_mels;
  scratch_layout s;
  if (((uintptr_t)scratch & 7u) != 0) return AF_ERR_ARGUMENT;
  if (layout(m, frames, NULL, &s) > scratch_bytes) return AF_ERR_BUFFER;
  layout(m, frames, (char*)scratch, &s);
  for (size_t t = 0; t < frames; ++t) {
    const long long lo = (long long)t * m->hop_length;
    const int status = frame_spectrum(m, v, 0, n, lo, rfft, ctx, &s);
    if (status != AF_OK) return status;
    mel_row(m, s.power, s.db + t * bands);
    s.exact[t] = block_energy(v, n, lo, lo + m->n_fft);
  }
  const frame_run run = {s.db, s.exact, frames, 0, frames};
  return stream_patch(m, &run, out, NULL);
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
  if (model->preset == AF_PRESET_LOGMEL_STREAM)
    return clip_frames(model, &view, n, rfft, rfft_context, scratch, scratch_bytes, out);
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
  for (size_t i = 0; i < n; ++i) out[i] = quantise_value(model, i, features[i]);
  return AF_OK;
}

/* ------------------------------------------------------------------------
 * Streaming (pipeline/events.py's stream_windows). */

static int stream_model_usable(const af_model* m) {
  return model_is_usable(m) && m->window_samples > 0 && m->hop_samples > 0 &&
         m->hop_samples <= m->window_samples &&
         (m->preset != AF_PRESET_LOGMEL_STREAM ||
          (m->window_samples >= m->n_fft && m->hop_length <= m->n_fft));
}

/* Window starts are rounded down to a multiple of this (the frame grid). */
static uint64_t alignment(const af_model* m) {
  return m->preset == AF_PRESET_LOGMEL_STREAM ? (uint64_t)m->hop_length : 1u;
}

static size_t frame_slots(const af_model* m) {
  return 2 + ((size_t)m->window_samples - (size_t)m->n_fft) / (size_t)m->hop_length;
}

size_t af_stream_bytes(const af_model* model) {
  if (!stream_model_usable(model)) return 0;
  return AF_STREAM_BYTES(model->preset, (size_t)model->n_fft, (size_t)model->hop_length,
                         (size_t)model->n_mels, (size_t)model->window_samples);
}

int af_stream_init(af_stream* stream, const af_model* model, int16_t* ring, size_t ring_len) {
  if (stream == NULL || model == NULL || ring == NULL) return AF_ERR_NULL;
  if (!stream_model_usable(model) || model->preset == AF_PRESET_LOGMEL_STREAM)
    return AF_ERR_UNSUPPORTED;
  if (ring_len < (size_t)model->window_samples) return AF_ERR_BUFFER;
  memset(stream, 0, sizeof *stream);
  stream->model = model;
  stream->ring = ring;
  stream->ring_len = ring_len;
  af_stream_reset(stream);
  return AF_OK;
}

int af_stream_start(af_stream* stream, const af_model* model, void* memory, size_t memory_bytes,
                    af_rfft_fn rfft, void* rfft_context) {
  if (stream == NULL || model == NULL || memory == NULL || rfft == NULL) return AF_ERR_NULL;
  if (!stream_model_usable(model)) return AF_ERR_UNSUPPORTED;
  if (((uintptr_t)memory & 7u) != 0) return AF_ERR_ARGUMENT;
  if (memory_bytes < af_stream_bytes(model)) return AF_ERR_BUFFER;
  if (model->preset != AF_PRESET_LOGMEL_STREAM)
    return af_stream_init(stream, model, (int16_t*)memory, memory_bytes / sizeof(int16_t));
  memset(stream, 0, sizeof *stream);
  stream->model = model;
  stream->rfft = rfft;
  stream->rfft_context = rfft_context;
  stream->slots = frame_slots(model);
  const size_t n_fft = (size_t)model->n_fft;
  char* at = (char*)memory;  /* 8-byte values first, then floats, then samples */
  stream->energy = (uint64_t*)(void*)at;
  at += stream->slots * sizeof(uint64_t);
  stream->rows = (float*)(void*)at;
  at += stream->slots * (size_t)model->n_mels * sizeof(float);
  stream->fft_in = (float*)(void*)at;
  stream->fft_out = stream->fft_in + n_fft;
  stream->power = stream->fft_out + n_fft;
  stream->pending = (int16_t*)(void*)(stream->power + n_fft / 2 + 1);
  af_stream_reset(stream);
  return AF_OK;
}

void af_stream_reset(af_stream* stream) {
  if (stream == NULL) return;
  stream->total = stream->next_start = stream->ready_start = stream->windows = 0;
  stream->ready_len = 0;
  stream->last_start = -1;
  stream->finished = 0;
  stream->pending_len = 0;
  stream->frames = 0;
}

/* The next frame from the pending samples (zero-padded when fewer than
 * n_fft: a stream shorter than one frame): its mel row and energy. */
static int compute_frame(af_stream* st) {
  const af_model* m = st->model;
  const size_t slot = (size_t)(st->frames % st->slots);
  const samples_view pending = {st->pending, st->pending_len, NULL, 0};
  scratch_layout s;
  memset(&s, 0, sizeof s);
  s.fft_in = st->fft_in;
  s.fft_out = st->fft_out;
  s.power = st->power;
  const int status = frame_spectrum(m, &pending, 0, st->pending_len, 0, st->rfft,
                                    st->rfft_context, &s);
  if (status != AF_OK) return status;
  mel_row(m, st->power, st->rows + slot * (size_t)m->n_mels);
  st->energy[slot] = squares(st->pending, st->pending_len);
  st->frames += 1;
  return AF_OK;
}

int af_stream_push(af_stream* stream, const int16_t* samples, size_t n, size_t* used) {
  if (stream == NULL || used == NULL || (samples == NULL && n > 0)) return AF_ERR_NULL;
  *used = 0;
  if (stream->ready_len > 0 || stream->finished) return AF_ERR_STATE;
  const uint64_t window_end = stream->next_start + (uint64_t)stream->model->window_samples;
  const size_t n_fft = (size_t)stream->model->n_fft, hop = (size_t)stream->model->hop_length;
  while (*used < n) {  /* in runs: up to the ring's (or frame's) end or the window's end */
    size_t run = n - *used;
    if (run > window_end - stream->total) run = (size_t)(window_end - stream->total);
    if (stream->ring == NULL) {  /* logmel_stream: a frame every hop samples */
      if (run > n_fft - stream->pending_len) run = n_fft - stream->pending_len;
      memcpy(stream->pending + stream->pending_len, samples + *used, run * sizeof(int16_t));
      stream->pending_len += run;
      if (stream->pending_len == n_fft) {
        const int status = compute_frame(stream);
        if (status != AF_OK) return status;
        memmove(stream->pending, stream->pending + hop, (n_fft - hop) * sizeof(int16_t));
        stream->pending_len -= hop;
      }
    } else {
      const size_t at = (size_t)(stream->total % stream->ring_len);
      if (run > stream->ring_len - at) run = stream->ring_len - at;
      memcpy(stream->ring + at, samples + *used, run * sizeof(int16_t));
    }
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
  const uint64_t window = (uint64_t)stream->model->window_samples, align = alignment(stream->model);
  if (stream->total == 0) return AF_ERR_ARGUMENT;
  if (stream->last_start < 0) {  /* no longer than a window: one window of all of it */
    if (stream->ring == NULL && stream->frames == 0) {  /* shorter than a frame */
      const int status = compute_frame(stream);
      if (status != AF_OK) return status;
    }
    stream->ready_start = 0;
    stream->ready_len = (size_t)stream->total;
    return AF_WINDOW_READY;
  }
  const uint64_t last = stream->total >= window ? (stream->total - window) / align * align : 0;
  if ((uint64_t)stream->last_start + window < stream->total &&
      last > (uint64_t)stream->last_start) {  /* ends at the end (on the grid: just before) */
    stream->ready_start = last;
    stream->ready_len = (size_t)window;
    return AF_WINDOW_READY;
  }
  return AF_OK;
}

/* The ready window's features from the frames computed for it. */
static int stream_window_frames(af_stream* stream, int8_t* input, float* features) {
  const af_model* m = stream->model;
  if (stream->ready_len < (size_t)m->min_samples) return AF_ERR_TOO_SHORT;
  const uint64_t first = stream->ready_start / (uint64_t)m->hop_length;
  const frame_run run = {stream->rows, stream->energy, stream->slots,
                         (size_t)(first % stream->slots), grid_frames(m, stream->ready_len)};
  return stream_patch(m, &run, features, input);
}

int af_stream_window(af_stream* stream, af_rfft_fn rfft, void* rfft_context, void* scratch,
                     size_t scratch_bytes, int8_t* input, size_t input_len, float* features,
                     uint64_t* start, int64_t* centre) {
  if (stream == NULL || input == NULL) return AF_ERR_NULL;
  const int frames = stream->ring == NULL;  /* logmel_stream: rfft and scratch unused */
  if (!frames && (rfft == NULL || scratch == NULL)) return AF_ERR_NULL;
  if (stream->ready_len == 0) return AF_ERR_STATE;
  const af_model* m = stream->model;
  if (input_len < (size_t)m->n_features ||
      (!frames && scratch_bytes < af_scratch_bytes(m, stream->ready_len)))
    return AF_ERR_BUFFER;  /* the window stays ready */
  const size_t len = stream->ready_len;
  if (start != NULL) *start = stream->ready_start;
  if (centre != NULL) *centre = 2 * (int64_t)stream->ready_start + (int64_t)len;
  int status;
  if (frames) {
    status = stream_window_frames(stream, input, features);
  } else {
    const size_t offset = (size_t)(stream->ready_start % stream->ring_len);
    const size_t first_piece = offset + len <= stream->ring_len ? len : stream->ring_len - offset;
    const samples_view view = {stream->ring + offset, first_piece, stream->ring, len - first_piece};
    const float* result;
    status = features_of_view(m, &view, len, rfft, rfft_context, scratch, scratch_bytes, &result);
    if (status == AF_OK) {
      if (features != NULL) memcpy(features, result, sizeof(float) * (size_t)m->n_features);
      status = af_quantise(m, result, (size_t)m->n_features, input, input_len);
    }
  }
  stream->ready_len = 0;
  if (!stream->finished) {
    stream->last_start = (int64_t)stream->ready_start;
    stream->windows += 1;
    stream->next_start = stream->windows * (uint64_t)m->hop_samples / alignment(m) * alignment(m);
  }
  return status;
}
