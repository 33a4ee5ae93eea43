/* Events from per-window class probabilities, as predict.py finds them in a
 * long recording: a centred moving average over windows, a per-class
 * threshold, a minimum duration, and background classes that never form
 * events (pipeline/events.py's smooth and find_events). Streaming: push each
 * window's probabilities as it is classified; an event comes out when its
 * run of windows ends. No heap; the caller owns the state. */
#ifndef AF_EVENTS_H_
#define AF_EVENTS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef AF_EVENTS_MAX_CLASSES
#define AF_EVENTS_MAX_CLASSES 8
#endif
#ifndef AF_EVENTS_MAX_SMOOTH
#define AF_EVENTS_MAX_SMOOTH 15  /* largest moving average (windows) */
#endif

typedef struct {
  int n_classes;
  int smooth_windows;        /* predict.py's SMOOTH_WINDOWS: averages 2 * (w / 2) + 1 windows */
  const float* thresholds;   /* [n_classes]: smoothed probability that starts an event */
  const uint8_t* background; /* [n_classes]: 1 = the class never forms events */
  int64_t min_event;         /* shorter events are dropped (half-samples, as every time here) */
  int64_t hop;               /* step between windows (half-samples) */
} af_event_config;

/* Times are integer counts of half-samples (a window's centre can fall
 * between two samples): exact for any length of stream, and no double
 * precision on the device. AF_HALF_SAMPLES_TO_S converts one for printing. */
#define AF_HALF_SAMPLES_TO_S(t, sample_rate) ((double)(t) / (2.0 * (double)(sample_rate)))

typedef struct {
  int class_index;
  int64_t start, end;        /* half a hop before the first window's centre, after the last */
  float peak_probability, mean_probability;
} af_event;

typedef struct {
  const af_event_config* config;
  float probs[AF_EVENTS_MAX_SMOOTH][AF_EVENTS_MAX_CLASSES];  /* the last windows, a ring */
  int64_t centres[AF_EVENTS_MAX_SMOOTH];
  uint64_t pushed;           /* windows pushed */
  uint64_t smoothed;         /* windows smoothed and looked at */
  int in_run[AF_EVENTS_MAX_CLASSES];
  int64_t run_first_centre[AF_EVENTS_MAX_CLASSES], last_centre;
  float run_peak[AF_EVENTS_MAX_CLASSES], run_sum[AF_EVENTS_MAX_CLASSES];
  uint32_t run_windows[AF_EVENTS_MAX_CLASSES];
} af_events;

/* AF_OK, AF_ERR_NULL, or AF_ERR_ARGUMENT (too many classes, smoothing
 * wider than AF_EVENTS_MAX_SMOOTH, a threshold outside [0, 1]). The header
 * generator refuses models with more than AF_EVENTS_MAX_CLASSES classes. */
int af_events_init(af_events* events, const af_event_config* config);
void af_events_reset(af_events* events);

/* One window's class probabilities (all 0 for a window without features,
 * as predict.py does; each in [0, 1], else AF_ERR_ARGUMENT) and its centre
 * in half-samples (af_stream_window's; in [0, AF_EVENTS_MAX_CENTRE] and
 * above the previous window's, else AF_ERR_ARGUMENT). Events that ended are written to ``out``; *n_out: how many.
 * ``max_out`` must be at least n_classes (one window ends at most one event
 * per class); with less, AF_ERR_BUFFER, *n_out = the room needed, and
 * nothing is consumed: push the same window again. No event is ever lost. */
#define AF_EVENTS_MAX_CENTRE ((int64_t)1 << 52)  /* centuries of audio at 16 kHz */
int af_events_push(af_events* events, const float* probs, int64_t centre, af_event* out,
                   size_t max_out, size_t* n_out);

/* End of the recording: the events still open. With room for fewer than
 * there are, AF_ERR_BUFFER, *n_out = the room needed, and nothing changes:
 * finish again with that much room. n_classes * (w / 2 + 2) is always
 * enough. */
int af_events_finish(af_events* events, af_event* out, size_t max_out, size_t* n_out);

/* The class probabilities predict.py works with, from the model's int8
 * output: dequantised, then calibrated at the open-set temperature of the
 * model header (kTemperature; 1 = unchanged): softmax(log(max(p, 1e-7)) / T).
 * ``scale`` and ``zero_point`` are the output tensor's; a scale or
 * temperature that is not positive and finite is AF_ERR_ARGUMENT. */
int af_output_probabilities(const int8_t* output, int n_classes, float scale, int zero_point,
                            float temperature, float* probs);

/* The open-set decision predict.py makes for a whole clip (pipeline/open_set.py's
 * decide), from calibrated probabilities: the most probable class (the first of
 * equals), unless it is not ``background`` and its probability is below
 * ``min_probability`` (the model header's kMinProbability): then ``background``
 * (kBackgroundClass; -1: no fallback). Returns the class, or -1 for NULL, no
 * classes or a background class out of range. Events do not use it: they
 * compare each class with its own threshold. */
int af_decide(const float* calibrated, int n_classes, float min_probability, int background);

#ifdef __cplusplus
}
#endif

#endif /* AF_EVENTS_H_ */
