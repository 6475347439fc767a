/* Few-row fp32 matrix products for CPU decoding: y = x w^T (+ bias) with x [M, K] small (a CFG batch: 2-8 rows).
 *
 * At one token per step a decoder reads every weight once per step and does ~M multiply-adds with it, so the
 * product is bound by memory bandwidth. Library GEMMs (MKL, oneDNN, OpenBLAS) are tuned for large M and reach
 * about half the bandwidth here; these loops read each weight row block from memory once for all M rows, keep
 * the x tile and the weight tile in L1 (K tiles of 512) and accumulate dot products along K in vector registers.
 *
 * Built at first use by wavecraft/lm/native.py (cc -O3 -mavx2 -mfma -fopenmp, plus -mavx512f where the CPU has
 * AVX-512) and called through ctypes; the OpenMP runtime is the one torch already loaded (same soname), so threads
 * are shared with torch's. decode.c calls the same loops inside its own parallel region, with an epilogue fused
 * into the output write.
 *
 * Weights come as fp32, or as int8 with one fp32 scale per output row (weight-only quantization: a quarter of the
 * bytes to stream; x stays fp32, each vector of 8 or 16 weights is widened to fp32 in registers and the row's
 * scale is applied to the finished dot product).
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

/* The vector: 16 floats where the CPU has AVX-512 (native.py builds with it there), else 8. In a bandwidth-bound
 * product, half the instructions per weight let the core keep more loads in flight. vload_*(p, n) read n = LANES
 * weights, or 8 at the end of a row whose length is an odd multiple of 8.
 *
 * Register tiles (R weight rows, C input rows) for few (M <= 2) and more input rows, measured at musicgen-small
 * shapes. AVX2: (4, 2) streams fp32 fastest for M <= 2, (6, 2) int8; (3, 4) needs the fewest loads per
 * multiply-add, which is what limits M = 4-8. AVX-512 (32 registers): (8, 2) and (4, 4). Against the AVX2 build on
 * the same machine (benchmarks/bench_generate.py): 8-row fp32 products 1.06-1.07x the time of reading their
 * weights instead of 1.13-1.25x (a batch-4 step 1.28-1.30x the batch-1 step instead of 1.40-1.41x), int8 steps
 * 1.06x (2 rows) and 1.12x (8 rows) faster; 2-row fp32 products, already at the bandwidth, unchanged. */
#if defined(__AVX512F__)
#define FEW_F32 8, 2
#define FEW_I8 8, 2
#define MANY_F32 4, 4
#define MANY_I8 4, 4
#define LANES 16
typedef __m512 vec;
static inline vec vzero(void) { return _mm512_setzero_ps(); }
static inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline float vsum(vec v) { return _mm512_reduce_add_ps(v); }
static inline vec vload_f32(const float *p, int n) {
    return n == LANES ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(0xFF, p);
}
static inline vec vload_i8(const int8_t *p, int n) {
    const __m128i b = n == LANES ? _mm_loadu_si128((const __m128i *)p) : _mm_loadl_epi64((const __m128i *)p);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}
#else
#define FEW_F32 4, 2
#define FEW_I8 6, 2
#define MANY_F32 3, 4
#define MANY_I8 3, 4
#define LANES 8
typedef __m256 vec;
static inline vec vzero(void) { return _mm256_setzero_ps(); }
static inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline float vsum(vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vec vload_f32(const float *p, int n) { (void)n; return _mm256_loadu_ps(p); }
static inline vec vload_i8(const int8_t *p, int n) {
    (void)n;
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
#endif

static inline void finish(float *out, float v, int epilogue) {
    if (epilogue == EPILOGUE_ADD)
        *out += v;
    else
        *out = v;
}

/* n weights at k of each of the R rows times the C input rows, into the accumulators a. */
#define TILE_STEP(R, C, LOAD, k, n)                                                                                 \
    do {                                                                                                            \
        vec v[C];                                                                                                   \
        for (int c = 0; c < (C); ++c) v[c] = vload_f32(xr[c] + (k), (n));                                           \
        for (int r = 0; r < (R); ++r) {                                                                             \
            const vec wv = LOAD(wr[r] + (k), (n));                                                                  \
            for (int c = 0; c < (C); ++c) a[r][c] = vfma(wv, v[c], a[r][c]);                                        \
        }                                                                                                           \
    } while (0)

/* One kernel per register tile: R weight rows x C input rows of vector accumulators, for weights of type T read by
 * LOAD (scale: one factor per weight row, or NULL). */
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
                vec acc[R][M_GROUP + (C)];                                                                          \
                for (int r = 0; r < (R); ++r)                                                                       \
                    for (int m = 0; m < M_GROUP + (C); ++m) acc[r][m] = vzero();                                    \
                for (int64_t k0 = 0; k0 < K; k0 += K_TILE) {                                                        \
                    const int64_t k1 = k0 + K_TILE < K ? k0 + K_TILE : K;                                           \
                    for (int64_t m = 0; m < gm; m += (C)) {                                                         \
                        const float *xr[C];                                                                         \
                        for (int c = 0; c < (C); ++c) xr[c] = x + (g + (m + c < gm ? m + c : gm - 1)) * ldx;        \
                        vec a[R][C];                                                                                \
                        for (int r = 0; r < (R); ++r)                                                               \
                            for (int c = 0; c < (C); ++c) a[r][c] = acc[r][m + c];                                  \
                        /* Later passes over this tile read it from L1: fetch the next tile meanwhile (8 rows:      \
                         * ~10% faster). In a single pass (M <= C) it made fp32 slower, but int8, which spends      \
                         * more time per byte widening it, 1.3x faster. */                                          \
                        const T *next[R];                                                                           \
                        for (int r = 0; r < (R); ++r)                                                               \
                            next[r] = (k1 < K ? wr[r] + K_TILE : w + (n0 + (R) + r) * ldw) - k0;                    \
                        const int fetch = (m > 0 || sizeof(T) == 1) && (k1 < K || b + 1 < blocks);                  \
                        int64_t k = k0;                                                                             \
                        for (; k + LANES <= k1; k += LANES) {                                                       \
                            if (fetch && (k & (64 / sizeof(T) - 1)) == 0) /* once per cache line */                 \
                                for (int r = 0; r < (R); ++r) _mm_prefetch((const char *)(next[r] + k), _MM_HINT_T0); \
                            TILE_STEP(R, C, LOAD, k, LANES);                                                        \
                        }                                                                                           \
                        if (k < k1) TILE_STEP(R, C, LOAD, k, 8);                                                    \
                        for (int r = 0; r < (R); ++r)                                                               \
                            for (int c = 0; c < (C); ++c) acc[r][m + c] = a[r][c];                                  \
                    }                                                                                               \
                }                                                                                                   \
                for (int64_t m = 0; m < gm; ++m)                                                                    \
                    for (int r = 0; r < rows; ++r)                                                                  \
                        finish(y + (g + m) * ldy + n0 + r,                                                          \
                               vsum(acc[r][m]) * (scale ? scale[n0 + r] : 1.0f) + (bias ? bias[n0 + r] : 0.0f),     \
                               epilogue);                                                                           \
            }                                                                                                       \
        }                                                                                                           \
    }

#define DEFINE(NAME, TILE, T, LOAD) DEFINE_KERNEL_(NAME, TILE, T, LOAD)
#define DEFINE_KERNEL_(NAME, R, C, T, LOAD) DEFINE_KERNEL(NAME, R, C, T, LOAD) /* expands TILE into R, C */
DEFINE(gemv_few, FEW_F32, float, vload_f32)
DEFINE(gemv_many, MANY_F32, float, vload_f32)
DEFINE(gemv_i8_few, FEW_I8, int8_t, vload_i8)
DEFINE(gemv_i8_many, MANY_I8, int8_t, vload_i8)

void wc_gemv(const float *x, int64_t ldx, const float *w, int64_t ldw, const float *bias, float *y, int64_t ldy,
             int64_t M, int64_t N, int64_t K, int epilogue) {
    if (M <= 2)
        gemv_few(x, ldx, w, ldw, NULL, bias, y, ldy, M, N, K, epilogue);
    else
        gemv_many(x, ldx, w, ldw, NULL, bias, y, ldy, M, N, K, epilogue);
}

void wc_gemv_i8(const float *x, int64_t ldx, const int8_t *w, int64_t ldw, const float *scale, const float *bias,
                float *y, int64_t ldy, int64_t M, int64_t N, int64_t K, int epilogue) {
    if (M <= 2)
        gemv_i8_few(x, ldx, w, ldw, scale, bias, y, ldy, M, N, K, epilogue);
    else
        gemv_i8_many(x, ldx, w, ldw, scale, bias, y, ldy, M, N, K, epilogue);
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
