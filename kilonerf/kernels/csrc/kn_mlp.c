/* Tiny-MLP evaluation on blocks of KN_LANES (16 or 8, one compilation each) samples of one
 * network, samples in vector lanes.
 *
 * Why samples in lanes: every layer is then a sequence of "16 samples times one broadcast
 * weight" FMAs, so the odd widths of this architecture (63, 33, 59, 3) cost no padding, and
 * the encoding is computed once per block, vectorised across samples.
 *
 * Compiled with FMA contraction on. GCC vector extensions keep the code portable: 64-byte
 * vectors map to AVX-512 registers where available, to pairs of AVX2 ones otherwise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

#ifndef KN_LANES
#define KN_LANES 16
#endif
#define KN_CAT(a, b) a##b
#define KN_XCAT(a, b) KN_CAT(a, b)
#define kn_block KN_XCAT(kn_block, KN_LANES)

typedef float vf __attribute__((vector_size(4 * KN_LANES)));
typedef int32_t vi __attribute__((vector_size(4 * KN_LANES)));
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(64)));

#define AI static inline __attribute__((always_inline))

AI vf relu(vf x) { return (vf)((vi)x & (vi)(x > 0.0f)); }
AI vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

/* NB outputs (columns 0 .. NB-1 of W, an nin x ldw row-major block) for the 16 samples
 * x[0 .. nin-1]; the NB accumulators stay in registers. */
#define DEFINE_DENSE(NB)                                                                       \
    AI void dense##NB(const float *restrict W, int ldw, const float *restrict b, int nin,      \
                      const vf *restrict x, vf *restrict y, int act) {                         \
        vf acc[NB];                                                                            \
        for (int q = 0; q < NB; q++) acc[q] = (vf){0} + b[q];                                  \
        for (int k = 0; k < nin; k++) {                                                        \
            const vf xk = x[k];                                                                \
            const float *wk = W + k * ldw;                                                     \
            for (int q = 0; q < NB; q++) acc[q] += xk * wk[q];                                 \
        }                                                                                      \
        for (int q = 0; q < NB; q++) y[q] = act ? relu(acc[q]) : acc[q];                       \
    }
DEFINE_DENSE(16)
DEFINE_DENSE(3)

/* One output column: two interleaved partial sums, since a single chain is latency-bound. */
AI vf dense_col(const float *restrict W, int ldw, float b, int nin, const vf *restrict x) {
    vf a0 = (vf){0} + b, a1 = (vf){0};
    int k = 0;
    for (; k + 1 < nin; k += 2) {
        a0 += x[k] * W[k * ldw];
        a1 += x[k + 1] * W[(k + 1) * ldw];
    }
    for (; k < nin; k++) a0 += x[k] * W[k * ldw];
    return a0 + a1;
}

/* A hidden layer with ReLU: nout (a multiple of 16) outputs. */
AI void hidden_layer(const float *restrict W, const float *restrict b, int nin, int nout, const vf *restrict x,
                     vf *restrict y) {
    for (int j = 0; j < nout; j += 16) dense16(W + j, nout, b + j, nin, x, y + j, 1);
}

#include "kn_enc.h"

void kn_block(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
              const float *dir, float *out_sigma, float *out_rgb) {
    const int H = KN_H_DIM;
    const float *w0 = p->w[0] + net * (KN_PE_POS * H), *b0 = p->b[0] + net * H;
    const float *w1 = p->w[1] + net * (H * H), *b1 = p->b[1] + net * H;
    const float *w2 = p->w[2] + net * (H * (H + 1)), *b2 = p->b[2] + net * (H + 1);
    vf enc[KN_PE_POS], h1[KN_H_DIM], h2[KN_H_DIM], vin[KN_H_DIM + KN_PE_DIR];
    float lanes[3][KN_LANES] __attribute__((aligned(64)));
    kn_gather3(pos, idx, count, KN_LANES, lanes[0]);
    encode(lanes, KN_LP, enc);
    hidden_layer(w0, b0, KN_PE_POS, H, enc, h1);
    hidden_layer(w1, b1, H, H, h1, h2);
    vf sigma = dense_col(w2, H + 1, b2[0], H, h2);
    float sig[KN_LANES] __attribute__((aligned(64)));
    memcpy(sig, &sigma, sizeof(sig));
    for (int i = 0; i < count; i++) out_sigma[idx[i]] = sig[i];
    if (dir == NULL || out_rgb == NULL) return;
    dense16(w2 + 1, H + 1, b2 + 1, H, h2, vin, 0);
    dense16(w2 + 17, H + 1, b2 + 17, H, h2, vin + 16, 0);
    kn_gather3(dir, idx, count, KN_LANES, lanes[0]);
    encode(lanes, KN_LD, vin + H);
    const float *w3 = p->w[3] + net * ((H + KN_PE_DIR) * H), *b3 = p->b[3] + net * H;
    const float *w4 = p->w[4] + net * (H * 3), *b4 = p->b[4] + net * 3;
    vf h4[KN_H_DIM], o[3];
    hidden_layer(w3, b3, H + KN_PE_DIR, H, vin, h4);
    dense3(w4, 3, b4, H, h4, o, 0);
    float rgb[3][KN_LANES] __attribute__((aligned(64)));
    for (int c = 0; c < 3; c++) {
        vf sgm = 1.0f / (1.0f + vexp(-o[c]));
        memcpy(rgb[c], &sgm, sizeof(vf));
    }
    for (int i = 0; i < count; i++)
        for (int c = 0; c < 3; c++) out_rgb[3 * (int64_t)idx[i] + c] = rgb[c][i];
}

#if KN_LANES == 16
/* Work item of kn_eval: `count` samples of network `net` starting at `start` in sorted order. */
typedef struct {
    int64_t net, start, count;
} kn_item;

#define KN_ITEM_ROWS 256 /* samples per work item: enough to amortise loading the weights */

/* wt: NULL (fp32) or the bf16 tiles of every network, amx: their engine (kn_params). */
int kn_eval(const float *const *w, const float *const *b, const uint16_t *wt, int amx, int64_t num_nets,
            const int64_t *net, const float *pos, const float *dir, int64_t n, float *sigma, float *rgb, int nthreads) {
    kn_params p;
    p.wt = wt;
    p.amx = amx;
    for (int i = 0; i < 5; i++) {
        p.w[i] = w[i];
        p.b[i] = b[i];
    }
    if (n <= 0) return 0;
    int64_t *start = calloc((size_t)num_nets + 1, sizeof(int64_t));
    int32_t *order = malloc((size_t)n * sizeof(int32_t));
    if (start == NULL || order == NULL) {
        free(start);
        free(order);
        return -2;
    }
    /* Counting sort by network (stable). */
    for (int64_t i = 0; i < n; i++) {
        int64_t k = net[i];
        if (k < 0 || k >= num_nets) {
            free(start);
            free(order);
            return -1;
        }
        start[k + 1]++;
    }
    int64_t items = 0;
    for (int64_t k = 0; k < num_nets; k++) {
        items += (start[k + 1] + KN_ITEM_ROWS - 1) / KN_ITEM_ROWS;
        start[k + 1] += start[k];
    }
    int64_t *fill = malloc((size_t)num_nets * sizeof(int64_t));
    kn_item *item = malloc((size_t)(items > 0 ? items : 1) * sizeof(kn_item));
    if (fill == NULL || item == NULL) {
        free(start);
        free(order);
        free(fill);
        free(item);
        return -2;
    }
    memcpy(fill, start, (size_t)num_nets * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) order[fill[net[i]]++] = (int32_t)i;
    int64_t m = 0;
    for (int64_t k = 0; k < num_nets; k++)
        for (int64_t s = start[k]; s < start[k + 1]; s += KN_ITEM_ROWS) {
            item[m].net = k;
            item[m].start = s;
            item[m].count = start[k + 1] - s < KN_ITEM_ROWS ? start[k + 1] - s : KN_ITEM_ROWS;
            m++;
        }
#pragma omp parallel num_threads(nthreads)
    {
        if (wt != NULL && amx) kn_amx_begin(); /* the tile configuration is per thread */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < m; t++) {
            kn_run(&p, item[t].net, order + item[t].start, item[t].count, pos, dir, sigma, rgb);
        }
        if (wt != NULL && amx) kn_amx_end();
    }
    free(start);
    free(order);
    free(fill);
    free(item);
    return 0;
}
#endif
