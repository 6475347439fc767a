/* Few-row fp32 matrix products for CPU decoding: y = x w^T (+ bias) with x [M, K] small (a CFG batch: 2-8 rows).
 *
 * At one token per step a decoder reads every weight once per step and does ~M multiply-adds with it, so the
 * product is bound by memory bandwidth. Library GEMMs (MKL, oneDNN, OpenBLAS) are tuned for large M and reach
 * about half the bandwidth here; these loops read each weight row block from memory once for all M rows, keep
 * the x tile and the weight tile in L1 (K tiles of 512) and accumulate dot products along K in AVX2 registers.
 *
 * Built at first use by wavecraft/lm/native.py (cc -O3 -mavx2 -mfma -fopenmp) and called through ctypes; the
 * OpenMP runtime is the one torch already loaded (same soname), so threads are shared with torch's. decode.c calls
 * the same loops inside its own parallel region, with an epilogue fused into the output write.
 *
 * Weights come as fp32, or as int8 with one fp32 scale per output row (weight-only quantization: a quarter of the
 * bytes to stream; x stays fp32, each group of 8 weights is widened to fp32 in registers and the row's scale is
 * applied to the finished dot product).
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

#define K_TILE 512
#define M_GROUP 8
/* Weight row blocks are handed to threads in chunks of 16 (64 KiB-256 KiB of weights): on a shared machine the
 * threads stream at different speeds, and a static split left one waiting at every product's end. Measured at
 * musicgen-small shapes: 4 and 48 no better, static 0-2% slower. */
#define OMP_FOR _Pragma("omp for schedule(dynamic, 16)")

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 consecutive weights as fp32 lanes. */
static inline __m256 load_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 load_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

static inline void finish(float *out, float v, int epilogue) {
    if (epilogue == EPILOGUE_ADD)
        *out += v;
    else
        *out = v;
}

/* One kernel per register tile: R weight rows x C input rows of 8-float accumulators, for weights of type T read by
 * LOAD (scale: one factor per weight row, or NULL). (4, 2) streams fp32 fastest for M <= 2, (6, 2) int8; (3, 4)
 * needs the fewest loads per multiply-add, which is what limits M = 4-8. */
#define DEFINE_KERNEL(NAME, R, C, T, LOAD)                                                                          \
    static void NAME(const float *x, int64_t ldx, const T *w, int64_t ldw, const float *scale, const float *bias,   \
                     float *y, int64_t ldy, int64_t M, int64_t N, int64_t K, int epilogue) {                        \
        const int64_t blocks = (N + (R) - 1) / (R);                                                                 \
        OMP_FOR                                                                                                     \
        for (int64_t b = 0; b < blocks; ++b) {                                                                      \
            const int64_t n0 = (R) * b, rows = N - n0 < (R) ? N - n0 : (R);                                         \
            const T *wr[R];                                                                                         \
            for (int r = 0; r < (R); ++r) wr[r] = w + (n0 + (r < rows ? r : rows - 1)) * ldw;                       \
            for (int64_t g = 0; g < M; g += M_GROUP) {                                                              \
                const int64_t gm = M - g < M_GROUP ? M - g : M_GROUP;                                               \
                __m256 acc[R][M_GROUP + (C)];                                                                       \
                for (int r = 0; r < (R); ++r)                                                                       \
                    for (int m = 0; m < M_GROUP + (C); ++m) acc[r][m] = _mm256_setzero_ps();                        \
                for (int64_t k0 = 0; k0 < K; k0 += K_TILE) {                                                        \
                    const int64_t k1 = k0 + K_TILE < K ? k0 + K_TILE : K;                                           \
                    for (int64_t m = 0; m < gm; m += (C)) {                                                         \
                        const float *xr[C];                                                                         \
                        for (int c = 0; c < (C); ++c) xr[c] = x + (g + (m + c < gm ? m + c : gm - 1)) * ldx;        \
                        __m256 a[R][C];                                                                             \
                        for (int r = 0; r < (R); ++r)                                                               \
                            for (int c = 0; c < (C); ++c) a[r][c] = acc[r][m + c];                                  \
                        /* Later passes over this tile read it from L1: fetch the next tile meanwhile (8 rows:      \
                         * ~10% faster). In a single pass (M <= C) it made fp32 slower, but int8, which spends      \
                         * more time per byte widening it, 1.3x faster. */                                          \
                        const T *next[R];                                                                           \
                        for (int r = 0; r < (R); ++r)                                                               \
                            next[r] = (k1 < K ? wr[r] + K_TILE : w + (n0 + (R) + r) * ldw) - k0;                    \
                        const int fetch = (m > 0 || sizeof(T) == 1) && (k1 < K || b + 1 < blocks);                  \
                        for (int64_t k = k0; k < k1; k += 8) {                                                      \
                            if (fetch && (k & (64 / sizeof(T) - 1)) == 0) /* once per cache line */                 \
                                for (int r = 0; r < (R); ++r) _mm_prefetch((const char *)(next[r] + k), _MM_HINT_T0); \
                            __m256 v[C];                                                                            \
                            for (int c = 0; c < (C); ++c) v[c] = _mm256_loadu_ps(xr[c] + k);                        \
                            for (int r = 0; r < (R); ++r) {                                                         \
                                const __m256 wv = LOAD(wr[r] + k);                                                  \
                                for (int c = 0; c < (C); ++c) a[r][c] = _mm256_fmadd_ps(wv, v[c], a[r][c]);         \
                            }                                                                                       \
                        }                                                                                           \
                        for (int r = 0; r < (R); ++r)                                                               \
                            for (int c = 0; c < (C); ++c) acc[r][m + c] = a[r][c];                                  \
                    }                                                                                               \
                }                                                                                                   \
                for (int64_t m = 0; m < gm; ++m)                                                                    \
                    for (int r = 0; r < rows; ++r)                                                                  \
                        finish(y + (g + m) * ldy + n0 + r,                                                          \
                               hsum(acc[r][m]) * (scale ? scale[n0 + r] : 1.0f) + (bias ? bias[n0 + r] : 0.0f),     \
                               epilogue);                                                                           \
            }                                                                                                       \
        }                                                                                                           \
    }

DEFINE_KERNEL(gemv_r4c2, 4, 2, float, load_f32)
DEFINE_KERNEL(gemv_r3c4, 3, 4, float, load_f32)
DEFINE_KERNEL(gemv_i8_r6c2, 6, 2, int8_t, load_i8)
DEFINE_KERNEL(gemv_i8_r3c4, 3, 4, int8_t, load_i8)

void wc_gemv(const float *x, int64_t ldx, const float *w, int64_t ldw, const float *bias, float *y, int64_t ldy,
             int64_t M, int64_t N, int64_t K, int epilogue) {
    if (M <= 2)
        gemv_r4c2(x, ldx, w, ldw, NULL, bias, y, ldy, M, N, K, epilogue);
    else
        gemv_r3c4(x, ldx, w, ldw, NULL, bias, y, ldy, M, N, K, epilogue);
}

void wc_gemv_i8(const float *x, int64_t ldx, const int8_t *w, int64_t ldw, const float *scale, const float *bias,
                float *y, int64_t ldy, int64_t M, int64_t N, int64_t K, int epilogue) {
    if (M <= 2)
        gemv_i8_r6c2(x, ldx, w, ldw, scale, bias, y, ldy, M, N, K, epilogue);
    else
        gemv_i8_r3c4(x, ldx, w, ldw, scale, bias, y, ldy, M, N, K, epilogue);
}

/* y = x w^T + bias as above, on all threads (native.linear). Returns 1. */
int wavecraft_gemv_f32(const float *x, int64_t ldx, const float *w, int64_t ldw, const float *bias, float *y,
                       int64_t ldy, int64_t M, int64_t N, int64_t K) {
#pragma omp parallel
    wc_gemv(x, ldx, w, ldw, bias, y, ldy, M, N, K, EPILOGUE_STORE);
    return 1;
}

/* y = (x q^T) * scale + bias for int8 weights q [N, K] with one scale per row, on all threads. Returns 1. */
int wavecraft_gemv_i8(const float *x, int64_t ldx, const int8_t *w, int64_t ldw, const float *scale,
                      const float *bias, float *y, int64_t ldy, int64_t M, int64_t N, int64_t K) {
#pragma omp parallel
    wc_gemv_i8(x, ldx, w, ldw, scale, bias, y, ldy, M, N, K, EPILOGUE_STORE);
    return 1;
}
