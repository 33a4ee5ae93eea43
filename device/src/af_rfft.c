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

/* In-place radix-2 complex FFT of m = n/2 interleaved values; twiddles of
 * the n-point table, taken every (n / size)-th. */
static void complex_fft(float* z, int m, const float* twiddle, int n) {
  for (int i = 1, j = 0; i < m; ++i) {  /* bit-reversed order */
    int bit = m >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j |= bit;
    if (i < j) {
      float t = z[2 * i]; z[2 * i] = z[2 * j]; z[2 * j] = t;
      t = z[2 * i + 1]; z[2 * i + 1] = z[2 * j + 1]; z[2 * j + 1] = t;
    }
  }
  for (int size = 2; size <= m; size <<= 1) {
    const int half = size / 2, step = n / size;
    for (int start = 0; start < m; start += size) {  /* j = 0: the twiddle is 1 */
      float* a = z + 2 * start;
      float* b = a + 2 * half;
      const float tr = b[0], ti = b[1];
      b[0] = a[0] - tr; b[1] = a[1] - ti;
      a[0] += tr; a[1] += ti;
    }
    for (int j = 1; j < half; ++j) {  /* each twiddle loaded once per stage */
      const float wr = twiddle[2 * j * step], wi = -twiddle[2 * j * step + 1];
      for (int start = 0; start < m; start += size) {
        float* a = z + 2 * (start + j);
        float* b = a + 2 * half;
        const float tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
        b[0] = a[0] - tr; b[1] = a[1] - ti;
        a[0] += tr; a[1] += ti;
      }
    }
  }
}

int af_rfft(void* context, float* in, float* out) {
  const af_rfft_instance* instance = (const af_rfft_instance*)context;
  if (instance == NULL || in == NULL || out == NULL) return AF_ERR_NULL;
  const int n = instance->n, m = n / 2;
  complex_fft(in, m, instance->twiddle, n);
  out[0] = in[0] + in[1];  /* X[0] and X[n/2] are real */
  out[1] = in[0] - in[1];
  for (int k = 1; k < m; ++k) {
    const float zr = in[2 * k], zi = in[2 * k + 1];
    const float cr = in[2 * (m - k)], ci = -in[2 * (m - k) + 1];  /* conj Z[m-k] */
    const float er = 0.5f * (zr + cr), ei = 0.5f * (zi + ci);
    const float orr = 0.5f * (zi - ci), oi = -0.5f * (zr - cr);   /* -i (Z - Zc) / 2 */
    const float wr = instance->twiddle[2 * k], wi = -instance->twiddle[2 * k + 1];
    out[2 * k] = er + wr * orr - wi * oi;
    out[2 * k + 1] = ei + wr * oi + wi * orr;
  }
  return AF_OK;
}
