/* Portable real FFT: an n-point real FFT as an n/2-point complex FFT of the
 * even/odd samples (which are already interleaved re/im in the input),
 * followed by the usual split step. */
#include "af_rfft.h"

#include <math.h>
#include <stddef.h>

#include "af_frontend.h"

int af_rfft_init(af_rfft_instance* instance, int n) {
  if (instance == NULL) return AF_ERR_NULL;
  if (n < 4 || n > AF_RFFT_MAX_N || (n & (n - 1)) != 0) return AF_ERR_ARGUMENT;
  instance->n = n;
  /* the n/2-point complex FFT's bit-reversed order as the pairs it swaps,
   * once here instead of on every frame */
  const int m = n / 2;
  instance->n_swaps = 0;
  for (int i = 1, j = 0; i < m; ++i) {
    int bit = m >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j |= bit;
    if (i < j) {
      instance->swaps[2 * instance->n_swaps] = (uint16_t)i;
      instance->swaps[2 * instance->n_swaps + 1] = (uint16_t)j;
      instance->n_swaps += 1;
    }
  }
  /* In single precision (no double on the device): each twiddle from an
   * angle of at most pi / 4, by symmetry, where sinf and cosf are accurate
   * to a rounding; angles are exact multiples of 2 pi / n. */
  const float step = 6.28318530717958647692f / (float)n;
  const int eighth = n / 8;
  for (int k = 0; k < n / 2; ++k) {
    if (eighth == 0) {  /* n = 4: angles 0 and pi / 2 */
      instance->twiddle[2 * k] = k == 0 ? 1.0f : 0.0f;
      instance->twiddle[2 * k + 1] = k == 0 ? 0.0f : 1.0f;
      continue;
    }
    const int octant = k / eighth, r = k % eighth;
    const float a = step * (float)(octant % 2 == 0 ? r : eighth - r);
    const float c = cosf(a), s = sinf(a);
    float cos_k, sin_k;
    switch (octant) {  /* angle = octant * pi / 4 +- a */
      case 0: cos_k = c; sin_k = s; break;
      case 1: cos_k = s; sin_k = c; break;
      case 2: cos_k = -s; sin_k = c; break;
      default: cos_k = -c; sin_k = s; break;
    }
    instance->twiddle[2 * k] = cos_k;
    instance->twiddle[2 * k + 1] = sin_k;
  }
  return AF_OK;
}

/* z[b] = z[a] - w z[b], z[a] = z[a] + w z[b]: a radix-2 butterfly with the
 * twiddle w = (wr, wi). */
#define BUTTERFLY(a, b, wr, wi)                                 \
  do {                                                          \
    const float tr_ = b##r * (wr) - b##i * (wi);                \
    const float ti_ = b##r * (wi) + b##i * (wr);                \
    b##r = a##r - tr_;                                          \
    b##i = a##i - ti_;                                          \
    a##r += tr_;                                                \
    a##i += ti_;                                                \
  } while (0)

/* The same with the twiddle 1 (no multiplication). */
#define BUTTERFLY_1(a, b)                                       \
  do {                                                          \
    const float tr_ = b##r, ti_ = b##i;                         \
    b##r = a##r - tr_;                                          \
    b##i = a##i - ti_;                                          \
    a##r += tr_;                                                \
    a##i += ti_;                                                \
  } while (0)

/* In-place radix-2 decimation-in-time complex FFT of m = n/2 interleaved
 * values; twiddles of the n-point table, taken every (n / size)-th. Two
 * stages run in one pass over the data (sizes s and 2 s: each group of four
 * points is loaded once for its four butterflies), doing exactly the
 * arithmetic of two separate stages, so the results are the same floats;
 * an odd number of stages starts with a single one. */
static void complex_fft(float* z, int m, const af_rfft_instance* instance) {
  const float* const twiddle = instance->twiddle;
  const int n = instance->n;
  for (int k = 0; k < instance->n_swaps; ++k) {  /* bit-reversed order */
    float* const a = z + 2 * instance->swaps[2 * k];
    float* const b = z + 2 * instance->swaps[2 * k + 1];
    const float re = a[0], im = a[1];
    a[0] = b[0];
    a[1] = b[1];
    b[0] = re;
    b[1] = im;
  }
  int stages = 0;
  while ((1 << stages) < m) ++stages;
  int size = 2;
  if (stages % 2 == 1) {  /* size 2: every twiddle is 1 */
    for (int start = 0; start < m; start += 2) {
      float* const p = z + 2 * start;
      float ar = p[0], ai = p[1], br = p[2], bi = p[3];
      BUTTERFLY_1(a, b);
      p[0] = ar; p[1] = ai; p[2] = br; p[3] = bi;
    }
    size = 4;
  }
  for (; size <= m / 2; size *= 4) {  /* stages of sizes size and 2 size */
    const int half = size / 2, step = n / size;
    for (int j = 0; j < half; ++j) {
      /* stage size: W_size^j; stage 2 size: W_2size^j and W_2size^(j + half) */
      const float w1r = twiddle[2 * j * step], w1i = -twiddle[2 * j * step + 1];
      const float w2r = twiddle[j * step], w2i = -twiddle[j * step + 1];
      const float w3r = twiddle[(j + half) * step], w3i = -twiddle[(j + half) * step + 1];
      for (int start = 0; start < m; start += 2 * size) {
        float* const pa = z + 2 * (start + j);
        float* const pb = pa + 2 * half;
        float* const pc = pa + 2 * size;
        float* const pd = pc + 2 * half;
        float ar = pa[0], ai = pa[1], br = pb[0], bi = pb[1];
        float cr = pc[0], ci = pc[1], dr = pd[0], di = pd[1];
        if (j == 0) {
          BUTTERFLY_1(a, b);
          BUTTERFLY_1(c, d);
          BUTTERFLY_1(a, c);
        } else {
          BUTTERFLY(a, b, w1r, w1i);
          BUTTERFLY(c, d, w1r, w1i);
          BUTTERFLY(a, c, w2r, w2i);
        }
        BUTTERFLY(b, d, w3r, w3i);
        pa[0] = ar; pa[1] = ai; pb[0] = br; pb[1] = bi;
        pc[0] = cr; pc[1] = ci; pd[0] = dr; pd[1] = di;
      }
    }
  }
}

int af_rfft(void* context, float* in, float* out) {
  const af_rfft_instance* instance = (const af_rfft_instance*)context;
  if (instance == NULL || in == NULL || out == NULL) return AF_ERR_NULL;
  const int n = instance->n, m = n / 2;
  complex_fft(in, m, instance);
  out[0] = in[0] + in[1];  /* X[0] and X[n/2] are real */
  out[1] = in[0] - in[1];
  for (int k = 1; k < m; ++k) {
    const float zr = in[2 * k], zi = in[2 * k + 1];
    const float cr = in[2 * (m - k)], ci = -in[2 * (m - k) + 1];  /* conj Z[m-k] */
    /* E = (Z + Zc) / 2, O = -i (Z - Zc) / 2, X = E + W O; the halving is
     * exact, so it is done once on the sums (the same floats). */
    const float sr = zr + cr, si = zi + ci, dr = zi - ci, di = zr - cr;
    const float wr = instance->twiddle[2 * k], wi = -instance->twiddle[2 * k + 1];
    out[2 * k] = 0.5f * (sr + wr * dr + wi * di);
    out[2 * k + 1] = 0.5f * (si - wr * di + wi * dr);
  }
  return AF_OK;
}
