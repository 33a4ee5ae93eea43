/* pipeline/events.py's smooth + find_events, one window at a time. */
#include "af_events.h"

#include <math.h>
#include <string.h>

#include "af_frontend.h"

int af_events_init(af_events* events, const af_event_config* config) {
  if (events == NULL || config == NULL || config->thresholds == NULL ||
      config->background == NULL)
    return AF_ERR_NULL;
  if (config->n_classes < 1 || config->n_classes > AF_EVENTS_MAX_CLASSES ||
      config->smooth_windows < 1 || 2 * (config->smooth_windows / 2) + 1 > AF_EVENTS_MAX_SMOOTH ||
      config->hop < 1 || config->min_event < 0)
    return AF_ERR_ARGUMENT;
  for (int c = 0; c < config->n_classes; ++c)
    if (!(config->thresholds[c] >= 0.0f && config->thresholds[c] <= 1.0f)) return AF_ERR_ARGUMENT;
  events->config = config;
  af_events_reset(events);
  return AF_OK;
}

void af_events_reset(af_events* events) {
  if (events == NULL) return;
  const af_event_config* config = events->config;
  memset(events, 0, sizeof *events);
  events->config = config;
}

/* A run of class c ended at the window before: keep it if long enough.
 * Every kept event is counted in *n_out; it is written only while there is
 * room (the callers check the room first, so in practice always). */
static void close_run(af_events* e, int c, af_event* out, size_t max_out, size_t* n_out) {
  const int64_t half_hop = e->config->hop / 2;  /* hops are whole samples: even */
  const int64_t start = e->run_first_centre[c] - half_hop;
  af_event event;
  event.class_index = c;
  event.start = start > 0 ? start : 0;
  event.end = e->last_centre + half_hop;
  event.peak_probability = e->run_peak[c];
  event.mean_probability = e->run_sum[c] / (float)e->run_windows[c];
  e->in_run[c] = 0;
  if (event.end - event.start < e->config->min_event) return;
  if (*n_out < max_out) out[*n_out] = event;
  *n_out += 1;
}

/* Class c's moving average at window i, over its neighbours up to ``last``
 * (all in the ring), summed in numpy's order: row after row. */
static float smoothed_at(const af_events* e, uint64_t i, uint64_t last, int c) {
  const uint64_t half = (uint64_t)(e->config->smooth_windows / 2);
  const uint64_t lo = i > half ? i - half : 0, hi = i + half < last ? i + half : last;
  float sum = e->probs[lo % AF_EVENTS_MAX_SMOOTH][c];
  for (uint64_t j = lo + 1; j <= hi; ++j) sum += e->probs[j % AF_EVENTS_MAX_SMOOTH][c];
  return sum / (float)(hi - lo + 1);
}

/* Smooth window i (its neighbours up to ``last`` are in the ring) and
 * extend or close each class's run. */
static void look_at(af_events* e, uint64_t i, uint64_t last, af_event* out, size_t max_out,
                    size_t* n_out) {
  const af_event_config* k = e->config;
  const size_t slot = (size_t)(i % AF_EVENTS_MAX_SMOOTH);
  for (int c = 0; c < k->n_classes; ++c) {
    if (k->background[c]) continue;
    const float smoothed = smoothed_at(e, i, last, c);
    if (smoothed >= k->thresholds[c]) {
      if (!e->in_run[c]) {
        e->in_run[c] = 1;
        e->run_first_centre[c] = e->centres[slot];
        e->run_peak[c] = smoothed;
        e->run_sum[c] = 0.0f;
        e->run_windows[c] = 0;
      }
      if (smoothed > e->run_peak[c]) e->run_peak[c] = smoothed;
      e->run_sum[c] += smoothed;
      e->run_windows[c] += 1;
    } else if (e->in_run[c]) {
      close_run(e, c, out, max_out, n_out);
    }
  }
  e->last_centre = e->centres[slot];
  e->smoothed = i + 1;
}

/* How many events finishing would give, without changing the state: only
 * which runs are open, where they started and the last centre matter. */
static size_t events_to_finish(const af_events* e) {
  const af_event_config* k = e->config;
  const uint64_t last = e->pushed - 1;
  int open[AF_EVENTS_MAX_CLASSES];
  int64_t first[AF_EVENTS_MAX_CLASSES], last_centre = e->last_centre;
  size_t count = 0;
  for (int c = 0; c < k->n_classes; ++c) {
    open[c] = e->in_run[c];
    first[c] = e->run_first_centre[c];
  }
  for (uint64_t i = e->smoothed; i <= last + 1; ++i) {  /* i = last + 1: the final close */
    const int64_t centre = i <= last ? e->centres[i % AF_EVENTS_MAX_SMOOTH] : 0;
    for (int c = 0; c < k->n_classes; ++c) {
      const int above = i <= last && !k->background[c] &&
                        smoothed_at(e, i, last, c) >= k->thresholds[c];
      if (above && !open[c]) {
        open[c] = 1;
        first[c] = centre;
      } else if (!above && open[c]) {
        const int64_t start = first[c] - k->hop / 2;
        const int64_t length = last_centre + k->hop / 2 - (start > 0 ? start : 0);
        count += length >= k->min_event;
        open[c] = 0;
      }
    }
    if (i <= last) last_centre = centre;
  }
  return count;
}

int af_events_push(af_events* events, const float* probs, int64_t centre, af_event* out,
                   size_t max_out, size_t* n_out) {
  if (events == NULL || events->config == NULL || probs == NULL || n_out == NULL ||
      (out == NULL && max_out > 0))
    return AF_ERR_NULL;
  *n_out = 0;
  for (int c = 0; c < events->config->n_classes; ++c)
    if (!(probs[c] >= 0.0f && probs[c] <= 1.0f)) return AF_ERR_ARGUMENT;  /* NaN too */
  /* Centres are finite and increase: an event's times come from them. */
  if (centre < 0 || centre > AF_EVENTS_MAX_CENTRE) return AF_ERR_ARGUMENT;
  if (events->pushed > 0 &&
      !(centre > events->centres[(size_t)((events->pushed - 1) % AF_EVENTS_MAX_SMOOTH)]))
    return AF_ERR_ARGUMENT;
  /* One window closes at most one run per class: with less room than
   * that, nothing is consumed (the caller pushes the window again). */
  if (max_out < (size_t)events->config->n_classes) {
    *n_out = (size_t)events->config->n_classes;
    return AF_ERR_BUFFER;
  }
  const size_t slot = (size_t)(events->pushed % AF_EVENTS_MAX_SMOOTH);
  memcpy(events->probs[slot], probs, sizeof(float) * (size_t)events->config->n_classes);
  events->centres[slot] = centre;
  const uint64_t half = (uint64_t)(events->config->smooth_windows / 2);
  events->pushed += 1;
  if (events->pushed <= half) return AF_OK;
  look_at(events, events->pushed - 1 - half, events->pushed - 1, out, max_out, n_out);
  return AF_OK;
}

int af_events_finish(af_events* events, af_event* out, size_t max_out, size_t* n_out) {
  if (events == NULL || events->config == NULL || n_out == NULL || (out == NULL && max_out > 0))
    return AF_ERR_NULL;
  *n_out = 0;
  if (events->pushed == 0) return AF_OK;
  const size_t needed = events_to_finish(events);
  if (needed > max_out) {  /* nothing is lost: the caller finishes again with more room */
    *n_out = needed;
    return AF_ERR_BUFFER;
  }
  while (events->smoothed < events->pushed)
    look_at(events, events->smoothed, events->pushed - 1, out, max_out, n_out);
  for (int c = 0; c < events->config->n_classes; ++c)
    if (events->in_run[c]) close_run(events, c, out, max_out, n_out);
  events->pushed = events->smoothed = 0;  /* ready for the next recording */
  return AF_OK;
}

int af_output_probabilities(const int8_t* output, int n_classes, float scale, int zero_point,
                            float temperature, float* probs) {
  if (output == NULL || probs == NULL) return AF_ERR_NULL;
  if (n_classes < 1 || n_classes > AF_EVENTS_MAX_CLASSES || !(temperature > 0.0f) ||
      !(scale > 0.0f) || !isfinite(temperature) || !isfinite(scale))
    return AF_ERR_ARGUMENT;
  float logits[AF_EVENTS_MAX_CLASSES], top = -INFINITY, sum = 0.0f;
  for (int c = 0; c < n_classes; ++c) {  /* pipeline/open_set.py's calibrate, in float32 */
    float p = ((float)output[c] - (float)zero_point) * scale;
    p = p < 1e-7f ? 1e-7f : p > 1.0f ? 1.0f : p;
    logits[c] = logf(p) / temperature;
    if (logits[c] > top) top = logits[c];
  }
  for (int c = 0; c < n_classes; ++c) sum += (logits[c] = expf(logits[c] - top));
  for (int c = 0; c < n_classes; ++c) probs[c] = logits[c] / sum;
  return AF_OK;
}

int af_decide(const float* calibrated, int n_classes, float min_probability, int background) {
  if (calibrated == NULL || n_classes < 1 || background >= n_classes || background < -1) return -1;
  int best = 0;
  for (int c = 1; c < n_classes; ++c)
    if (calibrated[c] > calibrated[best]) best = c;
  if (background >= 0 && best != background && calibrated[best] < min_probability) return background;
  return best;
}

