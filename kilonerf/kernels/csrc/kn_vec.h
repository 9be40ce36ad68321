/* Vector types and the fp32 layer helpers shared by the tiny-MLP kernels, with the samples of
 * a block in the lanes (kn_mlp.c evaluates, kn_mlp_grad.c trains). The includer may define
 * KN_LANES (16 or 8; default 16).
 *
 * GCC vector extensions keep the code portable: 64-byte vectors map to AVX-512 registers
 * where available, to pairs of AVX2 ones otherwise.
 */
#ifndef KN_VEC_H
#define KN_VEC_H

#include "kn.h"

#ifndef KN_LANES
#define KN_LANES 16
#endif

typedef float vf __attribute__((vector_size(4 * KN_LANES)));
typedef int32_t vi __attribute__((vector_size(4 * KN_LANES)));
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd __attribute__((vector_size(64)));

#define AI static inline __attribute__((always_inline))

AI vf relu(vf x) { return (vf)((vi)x & (vi)(x > 0.0f)); }
AI vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

#include "kn_enc.h"

/* NB outputs (columns 0 .. NB-1 of W, an nin x ldw row-major block) for the block's samples
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

/* A block's activations: the encoded position, both hidden layers, the view layer's input
 * (features, then the encoded direction), its output and the raw density and rgb logits. */
typedef struct {
    vf enc[KN_PE_POS], h1[KN_H_DIM], h2[KN_H_DIM], vin[KN_H_DIM + KN_PE_DIR], h4[KN_H_DIM];
    vf sigma, logit[3];
} kn_acts;

/* The density half of network `net` for positions pos[d][lane]: enc, h1, h2, sigma. */
AI void mlp_density(const kn_params *p, int64_t net, const float pos[3][KN_LANES], kn_acts *a) {
    const int H = KN_H_DIM;
    encode(pos, KN_LP, a->enc);
    hidden_layer(p->w[0] + net * (KN_PE_POS * H), p->b[0] + net * H, KN_PE_POS, H, a->enc, a->h1);
    hidden_layer(p->w[1] + net * (H * H), p->b[1] + net * H, H, H, a->h1, a->h2);
    a->sigma = dense_col(p->w[2] + net * (H * (H + 1)), H + 1, p->b[2][net * (H + 1)], H, a->h2);
}

/* The colour half after mlp_density, for directions dir[d][lane]: vin, h4, logit. */
AI void mlp_colour(const kn_params *p, int64_t net, const float dir[3][KN_LANES], kn_acts *a) {
    const int H = KN_H_DIM;
    const float *w2 = p->w[2] + net * (H * (H + 1)), *b2 = p->b[2] + net * (H + 1);
    dense16(w2 + 1, H + 1, b2 + 1, H, a->h2, a->vin, 0);
    dense16(w2 + 17, H + 1, b2 + 17, H, a->h2, a->vin + 16, 0);
    encode(dir, KN_LD, a->vin + H);
    hidden_layer(p->w[3] + net * ((H + KN_PE_DIR) * H), p->b[3] + net * H, H + KN_PE_DIR, H, a->vin, a->h4);
    dense3(p->w[4] + net * (H * 3), 3, p->b[4] + net * 3, H, a->h4, a->logit, 0);
}

AI vf sigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

#endif
