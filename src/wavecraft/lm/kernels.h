/* Shared declarations of the native decoding kernels (gemv.c, decode.c), built together by native.py. */
#ifndef WAVECRAFT_KERNELS_H
#define WAVECRAFT_KERNELS_H
#include <stdint.h>

/* What a product does with each output value v = (x w^T)[m, n] + bias[n]. */
enum { EPILOGUE_STORE = 0, EPILOGUE_ADD = 1 };

/* y [M, N] (rows ldy apart) from x [M, K] (rows ldx apart), w [N, K] (rows ldw apart), bias [N] or NULL; K % 8 == 0.
 * Called inside an OpenMP parallel region, the threads share the work and meet at a barrier at the end; called
 * outside one, the calling thread does it all. */
void wc_gemv(const float *x, int64_t ldx, const float *w, int64_t ldw, const float *bias, float *y, int64_t ldy,
             int64_t M, int64_t N, int64_t K, int epilogue);
/* The same for int8 weights w with one fp32 scale per row: y = (x w^T)[m, n] * scale[n] + bias[n]. */
void wc_gemv_i8(const float *x, int64_t ldx, const int8_t *w, int64_t ldw, const float *scale, const float *bias,
                float *y, int64_t ldy, int64_t M, int64_t N, int64_t K, int epilogue);

#endif
