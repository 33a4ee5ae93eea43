/* A small portable real FFT for af_frontend's FFT hook: radix-2, float,
 * twiddles computed once into a caller-owned instance (no heap). Output
 * packed as CMSIS-DSP's arm_rfft_fast_f32, so either plugs into the hook. */
#ifndef AF_RFFT_H_
#define AF_RFFT_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef AF_RFFT_MAX_N
#define AF_RFFT_MAX_N 512   /* largest FFT size an instance holds twiddles for */
#endif

typedef struct {
  int n;                            /* FFT size, a power of two, 4..AF_RFFT_MAX_N */
  int n_swaps;                      /* pairs in ``swaps`` */
  float twiddle[AF_RFFT_MAX_N];     /* cos, sin of 2 pi k / n for k < n / 2 */
  uint16_t swaps[AF_RFFT_MAX_N / 2];  /* the bit-reversal permutation's pairs, i < j */
} af_rfft_instance;

/* Returns 0, or AF_ERR_NULL / AF_ERR_ARGUMENT (n not a power of two in range). */
int af_rfft_init(af_rfft_instance* instance, int n);

/* af_rfft_fn: context is an af_rfft_instance; ``in`` is overwritten. */
int af_rfft(void* context, float* in, float* out);

#ifdef __cplusplus
}
#endif

#endif /* AF_RFFT_H_ */
