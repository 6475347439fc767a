/* One MusicGen decoding step through the whole layer stack, in one OpenMP parallel region.
 *
 * A CPU decoding step is ~150 few-row matrix products (gemv.c, bound by weight bandwidth) and ~400 small
 * operations between them (norms, attention over the cache, GELU, residuals). Dispatched one by one from Python the
 * small operations cost about a third of the step; here they run between the products on the same threads, with
 * the residual additions fused into the products' output writes.
 *
 * Layer (pre-norm, as model.py's TransformerLayer), for the M rows of x [M, D] at cache position pos:
 *   x += out(SA(LN1(x)))      keys/values of this position written into the cache [M, H, max_len, Dh]
 *   x += out(CA(LNc(x)))      cross keys/values computed once per generation (by PyTorch)
 *   x += W2 gelu(W1 LN2(x))
 * then logits[m, k] = head_k(LN_out(x[m])).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* glibc's vector math (libmvec, AVX2 variants): 8 lanes per call, where the scalar expf/erff of a softmax over the
 * cache or of the FFN's GELU took several percent of a step. Older glibc: the scalar functions. */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 35)
#define VECTOR_MATH 1
__m256 _ZGVdN8v_expf(__m256 x);
__m256 _ZGVdN8v_erff(__m256 x);
#else
#define VECTOR_MATH 0
#endif

/* x[i] = exp(x[i] - shift) for n floats; returns their sum. */
static float exp_shifted(float *x, int64_t n, float shift) {
    int64_t i = 0;
    float total = 0.0f;
#if VECTOR_MATH
    const __m256 s = _mm256_set1_ps(shift);
    __m256 sum = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    for (int l = 0; l < 8; ++l) total += lanes[l];
#endif
    for (; i < n; ++i) total += x[i] = expf(x[i] - shift);
    return total;
}

/* Exact GELU, x * (1 + erf(x / sqrt 2)) / 2, in place over n floats. */
static void gelu(float *x, int64_t n) {
    int64_t i = 0;
#if VECTOR_MATH
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), r2 = _mm256_set1_ps((float)M_SQRT1_2);
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = _ZGVdN8v_erff(_mm256_mul_ps(v, r2));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
    }
#endif
    for (; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

/* Projection weights (in_w, out_w, cq_w, co_w, fc1_w, fc2_w) are contiguous [N, K]: fp32, or int8 where the
 * matching scale (in_s ... fc2_s) gives one fp32 factor per row (NULL: fp32). in_w [3D, D] has rows q, k, v; cq_w
 * [D, D] holds the cross-attention query rows. */
typedef struct {
    const float *norm1_w, *norm1_b; const void *in_w; const float *in_b; const void *out_w; const float *out_b;
    const float *normc_w, *normc_b; const void *cq_w; const float *cq_b; const void *co_w; const float *co_b;
    const float *cross_k, *cross_v;                                        /* [M, H, L, Dh] at cross_strides */
    const float *norm2_w, *norm2_b; const void *fc1_w; const float *fc1_b; const void *fc2_w; const float *fc2_b;
    float *keys, *values;                                                  /* [M, H, max_len, Dh] contiguous */
    const float *in_s, *out_s, *cq_s, *co_s, *fc1_s, *fc2_s;
} layer_t;

typedef struct {
    int64_t rows, dim, heads, ffn, layers, max_len, cross_len, codebooks, card;
    int64_t cross_strides[3]; /* batch, head, position strides (floats) of cross_k and cross_v */
    float eps;
    const uint8_t *cross_mask; /* [M, L], 1 = attend; NULL = attend everywhere */
    const layer_t *layer;
    const float *out_norm_w, *out_norm_b;
    const float *const *head_w; /* codebooks x [card, D] */
    const float *const *head_b; /* codebooks x [card] or NULL */
    int64_t score_len; /* max(max_len, cross_len): the attention weights of one (row, head) */
    float *normed, *qkv, *attn, *hidden, *scores; /* [M, D], [M, 3D], [M, D], [M, FFN], [M, H, score_len] */
} plan_t;

/* y [M, D] = LayerNorm(x) over the last dimension (biased variance, as torch). Rows shared among threads. */
static void layer_norm(const float *x, const float *w, const float *b, float *y, int64_t M, int64_t D, float eps) {
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x + m * D;
        float mean = 0.0f, var = 0.0f;
        for (int64_t d = 0; d < D; ++d) mean += xr[d];
        mean /= (float)D;
        for (int64_t d = 0; d < D; ++d) var += (xr[d] - mean) * (xr[d] - mean);
        const float inv = 1.0f / sqrtf(var / (float)D + eps);
        for (int64_t d = 0; d < D; ++d) y[m * D + d] = (xr[d] - mean) * inv * (w ? w[d] : 1.0f) + (b ? b[d] : 0.0f);
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    int64_t d = 0;
    float s = 0.0f;
    if (n % 16 == 0) { /* two accumulators: consecutive FMAs do not wait on each other */
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (; d < n; d += 16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), s1);
        }
        __m256 v = _mm256_add_ps(s0, s1);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        s = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
    }
    for (; d < n; ++d) s += a[d] * b[d];
    return s;
}

/* out [Dh] = softmax(q . k_j / sqrt(Dh)) . v_j over the n positions j with keep[j] (keep NULL: all), k_j and v_j
 * `stride` floats apart. `scores` holds n floats. */
static void attend(const float *q, const float *k, const float *v, int64_t stride, int64_t n, const uint8_t *keep,
                   int64_t Dh, float *scores, float *out) {
    const float scale = 1.0f / sqrtf((float)Dh);
    float top = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
        const float s = !keep || keep[j] ? dot(q, k + j * stride, Dh) * scale : -INFINITY;
        scores[j] = s;
        top = s > top ? s : top;
    }
    const float total = exp_shifted(scores, n, top);
    if (Dh == 64) { /* every MusicGen size: the output row stays in eight registers */
        __m256 o[8];
        for (int i = 0; i < 8; ++i) o[i] = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; ++j) {
            const __m256 p = _mm256_set1_ps(scores[j]);
            const float *vj = v + j * stride;
            for (int i = 0; i < 8; ++i) o[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8 * i), o[i]);
        }
        const __m256 inv = _mm256_set1_ps(1.0f / total);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(o[i], inv));
        return;
    }
    for (int64_t d = 0; d < Dh; ++d) out[d] = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
        const float *vj = v + j * stride;
        for (int64_t d = 0; d < Dh; ++d) out[d] += scores[j] * vj[d];
    }
    for (int64_t d = 0; d < Dh; ++d) out[d] /= total;
}

static void self_attention(const plan_t *p, const layer_t *l, int64_t pos) {
    const int64_t M = p->rows, D = p->dim, H = p->heads, Dh = D / H, L = p->max_len;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < M * H; ++task) {
        const int64_t m = task / H, h = task % H;
        const float *q = p->qkv + m * 3 * D + h * Dh;
        float *keys = l->keys + task * L * Dh, *values = l->values + task * L * Dh;
        memcpy(keys + pos * Dh, q + D, Dh * sizeof(float));
        memcpy(values + pos * Dh, q + 2 * D, Dh * sizeof(float));
        attend(q, keys, values, Dh, pos + 1, NULL, Dh, p->scores + task * p->score_len,
               p->attn + m * D + h * Dh);
    }
}

static void cross_attention(const plan_t *p, const layer_t *l) {
    const int64_t M = p->rows, D = p->dim, H = p->heads, Dh = D / H, L = p->cross_len;
    const int64_t *st = p->cross_strides;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < M * H; ++task) {
        const int64_t m = task / H, h = task % H, at = m * st[0] + h * st[1];
        attend(p->qkv + m * D + h * Dh, l->cross_k + at, l->cross_v + at, st[2], L,
               p->cross_mask ? p->cross_mask + m * L : NULL, Dh, p->scores + task * p->score_len,
               p->attn + m * D + h * Dh);
    }
}

/* y [M, N] (rows ldy apart) from x [M, K] and weight w [N, K]: fp32, or int8 with row scales (scale non-NULL). */
static void product(const float *x, int64_t ldx, const void *w, const float *scale, const float *bias, float *y,
                    int64_t ldy, int64_t M, int64_t N, int64_t K, int epilogue) {
    if (scale)
        wc_gemv_i8(x, ldx, (const int8_t *)w, K, scale, bias, y, ldy, M, N, K, epilogue);
    else
        wc_gemv(x, ldx, (const float *)w, K, bias, y, ldy, M, N, K, epilogue);
}

/* x [M, D] at cache position pos -> logits [M, codebooks, card]; x is updated in place (the residual stream).
 * Returns 1, or 0 (and does nothing) if pos is outside the cache. */
int wavecraft_decode_step(const plan_t *p, float *x, int64_t pos, float *logits) {
    if (pos < 0 || pos >= p->max_len) return 0;
    const int64_t M = p->rows, D = p->dim, F = p->ffn;
#pragma omp parallel
    {
        for (int64_t i = 0; i < p->layers; ++i) {
            const layer_t *l = p->layer + i;
            layer_norm(x, l->norm1_w, l->norm1_b, p->normed, M, D, p->eps);
            product(p->normed, D, l->in_w, l->in_s, l->in_b, p->qkv, 3 * D, M, 3 * D, D, EPILOGUE_STORE);
            self_attention(p, l, pos);
            product(p->attn, D, l->out_w, l->out_s, l->out_b, x, D, M, D, D, EPILOGUE_ADD);
            if (l->cq_w) {
                layer_norm(x, l->normc_w, l->normc_b, p->normed, M, D, p->eps);
                product(p->normed, D, l->cq_w, l->cq_s, l->cq_b, p->qkv, D, M, D, D, EPILOGUE_STORE);
                cross_attention(p, l);
                product(p->attn, D, l->co_w, l->co_s, l->co_b, x, D, M, D, D, EPILOGUE_ADD);
            }
            layer_norm(x, l->norm2_w, l->norm2_b, p->normed, M, D, p->eps);
            product(p->normed, D, l->fc1_w, l->fc1_s, l->fc1_b, p->hidden, F, M, F, D, EPILOGUE_STORE);
#pragma omp for schedule(static)
            for (int64_t m = 0; m < M; ++m) gelu(p->hidden + m * F, F);
            product(p->hidden, F, l->fc2_w, l->fc2_s, l->fc2_b, x, D, M, D, F, EPILOGUE_ADD);
        }
        layer_norm(x, p->out_norm_w, p->out_norm_b, p->normed, M, D, p->eps);
        for (int64_t k = 0; k < p->codebooks; ++k)
            wc_gemv(p->normed, D, p->head_w[k], D, p->head_b ? p->head_b[k] : NULL, logits + k * p->card,
                    p->codebooks * p->card, M, p->card, D, EPILOGUE_STORE);
    }
    return 1;
}
