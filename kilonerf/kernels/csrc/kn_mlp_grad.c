/* Gradients of the tiny MLPs' parameters for training (fp32), samples in vector lanes.
 *
 * kn_mlp_backward recomputes each block's forward pass (kn_vec.h, the same arithmetic as
 * kn_eval's fp32 path), then back-propagates the upstream gradients of the raw density and the
 * rgb. Inputs get no gradient. Why recompute: the forward costs about a quarter of the whole,
 * and the activations of every sample would be ~0.5 KB each to store and reload.
 *
 * Weight gradients are outer products summed over samples, dW[k][j] += sum_s x[k][s] g[j][s].
 * With samples in lanes a sum over lanes would take a horizontal reduction per weight; instead
 * the layer's output gradient g is transposed (16 x 16 shuffles) to one row per sample, and
 * each sample adds x[k][s] (a broadcast) times its row into register accumulators for four
 * inputs k at a time. The narrow outputs (the density column, the rgb layer) keep one
 * accumulator per lane and weight instead, summed once per network.
 *
 * Work is split by network (one network's samples on one thread, its gradient summed locally
 * and added to the output once), so threads never write the same row.
 */
#include <stdlib.h>
#include <string.h>

#include "kn_vec.h"

#if KN_LANES != 16
#error "kn_mlp_grad.c is written for 16 lanes"
#endif

#define H KN_H_DIM
#define NV (KN_H_DIM + KN_PE_DIR)

/* Transpose of 16 vectors r[i] (lane s) into out[s] (lane i): four rounds of shuffles. */
AI void transpose16(const vf *restrict r, vf *restrict out) {
    const vi lo32 = {0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29};
    const vi hi32 = {2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31};
    const vi lo64 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const vi hi64 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const vi lo128 = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23};
    const vi hi128 = {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
    const vi lo256 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const vi hi256 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    vf t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo32);
        t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi32);
    }
    /* u[4 g + c], 128-bit lane L: column 4 L + c of rows 4 g .. 4 g + 3 */
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = __builtin_shuffle(t[4 * g], t[4 * g + 2], lo64);
        u[4 * g + 1] = __builtin_shuffle(t[4 * g], t[4 * g + 2], hi64);
        u[4 * g + 2] = __builtin_shuffle(t[4 * g + 1], t[4 * g + 3], lo64);
        u[4 * g + 3] = __builtin_shuffle(t[4 * g + 1], t[4 * g + 3], hi64);
    }
    for (int c = 0; c < 4; c++) {
        vf v_lo = __builtin_shuffle(u[c], u[4 + c], lo128), v_hi = __builtin_shuffle(u[c], u[4 + c], hi128);
        vf w_lo = __builtin_shuffle(u[8 + c], u[12 + c], lo128), w_hi = __builtin_shuffle(u[8 + c], u[12 + c], hi128);
        out[c] = __builtin_shuffle(v_lo, w_lo, lo256);
        out[4 + c] = __builtin_shuffle(v_lo, w_lo, hi256);
        out[8 + c] = __builtin_shuffle(v_hi, w_hi, lo256);
        out[12 + c] = __builtin_shuffle(v_hi, w_hi, hi256);
    }
}

/* dW[k][0 .. 31] += sum_s x[k][s] g[s][0 .. 31] for k < nin (dW row-major, 32 wide), and
 * db[0 .. 31] += sum_s g[s]; g: the layer's 32 output gradients, transposed here. */
AI void outer32(float *restrict dW, float *restrict db, int nin, const vf *restrict x, const vf *restrict g) {
    vf gt[16][2];
    {
        vf a[16], b[16];
        transpose16(g, a);
        transpose16(g + 16, b);
        for (int s = 0; s < 16; s++) {
            gt[s][0] = a[s];
            gt[s][1] = b[s];
        }
    }
    vf *dWv = (vf *)dW, *dbv = (vf *)db;
    vf b0 = dbv[0], b1 = dbv[1];
    for (int s = 0; s < 16; s++) {
        b0 += gt[s][0];
        b1 += gt[s][1];
    }
    dbv[0] = b0;
    dbv[1] = b1;
    const float *xs = (const float *)x;
    const int whole = nin & ~3;
    for (int k = 0; k < whole; k += 4) {
        vf acc[4][2];
        for (int q = 0; q < 4; q++) {
            acc[q][0] = dWv[2 * (k + q)];
            acc[q][1] = dWv[2 * (k + q) + 1];
        }
        for (int s = 0; s < 16; s++)
            for (int q = 0; q < 4; q++) {
                const float xv = xs[(k + q) * 16 + s];
                acc[q][0] += xv * gt[s][0];
                acc[q][1] += xv * gt[s][1];
            }
        for (int q = 0; q < 4; q++) {
            dWv[2 * (k + q)] = acc[q][0];
            dWv[2 * (k + q) + 1] = acc[q][1];
        }
    }
    for (int k = whole; k < nin; k++) {
        vf a0 = dWv[2 * k], a1 = dWv[2 * k + 1];
        for (int s = 0; s < 16; s++) {
            a0 += xs[k * 16 + s] * gt[s][0];
            a1 += xs[k * 16 + s] * gt[s][1];
        }
        dWv[2 * k] = a0;
        dWv[2 * k + 1] = a1;
    }
}

/* The gradient reaching a layer's inputs k < nin through W (nin x ldw, columns 0 .. nout - 1):
 * gin[k] = sum_j W[k][j] g[j], times the ReLU's derivative where act is given (act[k] > 0). */
AI void backprop(const float *restrict W, int ldw, int nin, int nout, const vf *restrict g,
                 const vf *restrict act, vf *restrict gin) {
    for (int k = 0; k < nin; k += 8) {
        vf acc[8];
        for (int q = 0; q < 8; q++) acc[q] = (vf){0};
        for (int j = 0; j < nout; j++)
            for (int q = 0; q < 8; q++) acc[q] += W[(k + q) * ldw + j] * g[j];
        for (int q = 0; q < 8; q++) gin[k + q] = act ? (vf)((vi)acc[q] & (vi)(act[k + q] > 0.0f)) : acc[q];
    }
}

/* One network's gradient, summed over its blocks before it is added to the output. The
 * 32-wide parts are plain sums; the density column and the rgb layer are per lane. */
typedef struct {
    float w0[KN_PE_POS * H], w1[H * H], w2[H * H], w3[NV * H], b0[H], b1[H], b2[H], b3[H];
    vf w2_sigma[H], w4[H][3], b2_sigma, b4[3];
} kn_net_grad;

static void block_backward(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                           const float *dir, const float *g_sigma, const float *g_rgb, kn_net_grad *G) {
    kn_acts a;
    float lanes[3][16] __attribute__((aligned(64)));
    kn_gather3(pos, idx, count, 16, lanes[0]);
    mlp_density(p, net, lanes, &a);
    kn_gather3(dir, idx, count, 16, lanes[0]);
    mlp_colour(p, net, lanes, &a);
    /* Upstream gradients; the idle lanes get zero, which zeroes everything they touch. */
    float up[4][16] __attribute__((aligned(64)));
    for (int i = 0; i < 16; i++) {
        const int64_t s = idx[i < count ? i : 0];
        up[0][i] = i < count ? g_sigma[s] : 0.0f;
        for (int c = 0; c < 3; c++) up[1 + c][i] = i < count ? g_rgb[3 * s + c] : 0.0f;
    }
    vf g_sig, g_logit[3];
    memcpy(&g_sig, up[0], sizeof(vf));
    for (int c = 0; c < 3; c++) {
        vf rgb = sigmoid(a.logit[c]), g;
        memcpy(&g, up[1 + c], sizeof(vf));
        g_logit[c] = g * rgb * (1.0f - rgb);
        G->b4[c] += g_logit[c];
    }
    const float *w1 = p->w[1] + net * (H * H), *w2 = p->w[2] + net * (H * (H + 1));
    const float *w3 = p->w[3] + net * (NV * H), *w4 = p->w[4] + net * (H * 3);
    vf g_h4[H], g_feat[H], g_out2[H + 1], g_h2[H], g_h1[H];
    for (int k = 0; k < H; k++)
        for (int c = 0; c < 3; c++) G->w4[k][c] += a.h4[k] * g_logit[c];
    backprop(w4, 3, H, 3, g_logit, a.h4, g_h4);
    outer32(G->w3, G->b3, NV, a.vin, g_h4);
    backprop(w3, H, H, H, g_h4, NULL, g_feat); /* the features' rows only: directions are inputs */
    G->b2_sigma += g_sig;
    for (int k = 0; k < H; k++) G->w2_sigma[k] += a.h2[k] * g_sig;
    outer32(G->w2, G->b2, H, a.h2, g_feat);
    g_out2[0] = g_sig;
    memcpy(g_out2 + 1, g_feat, sizeof(g_feat));
    backprop(w2, H + 1, H, H + 1, g_out2, a.h2, g_h2);
    outer32(G->w1, G->b1, H, a.h1, g_h2);
    backprop(w1, H, H, H, g_h2, a.h1, g_h1);
    outer32(G->w0, G->b0, KN_PE_POS, a.enc, g_h1);
}

AI float hsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* gw / gb[net] += G (the layouts of kn_params' tensors). */
static void add_net_grad(const kn_net_grad *G, float *const *gw, float *const *gb, int64_t net) {
    float *w0 = gw[0] + net * (KN_PE_POS * H), *w1 = gw[1] + net * (H * H), *w2 = gw[2] + net * (H * (H + 1));
    float *w3 = gw[3] + net * (NV * H), *w4 = gw[4] + net * (H * 3);
    for (int i = 0; i < KN_PE_POS * H; i++) w0[i] += G->w0[i];
    for (int i = 0; i < H * H; i++) w1[i] += G->w1[i];
    for (int i = 0; i < NV * H; i++) w3[i] += G->w3[i];
    for (int k = 0; k < H; k++) {
        w2[k * (H + 1)] += hsum(G->w2_sigma[k]);
        for (int j = 0; j < H; j++) w2[k * (H + 1) + 1 + j] += G->w2[k * H + j];
        for (int c = 0; c < 3; c++) w4[k * 3 + c] += hsum(G->w4[k][c]);
    }
    float *b0 = gb[0] + net * H, *b1 = gb[1] + net * H, *b2 = gb[2] + net * (H + 1), *b3 = gb[3] + net * H;
    float *b4 = gb[4] + net * 3;
    b2[0] += hsum(G->b2_sigma);
    for (int j = 0; j < H; j++) {
        b0[j] += G->b0[j];
        b1[j] += G->b1[j];
        b2[1 + j] += G->b2[j];
        b3[j] += G->b3[j];
    }
    for (int c = 0; c < 3; c++) b4[c] += hsum(G->b4[c]);
}

typedef struct {
    int64_t count, net;
} kn_count;

static int busiest_first(const void *a, const void *b) {
    const kn_count *x = a, *y = b;
    return x->count != y->count ? (x->count < y->count ? 1 : -1) : (x->net > y->net) - (x->net < y->net);
}

/* Adds the gradients of n samples' raw density (g_sigma, n) and rgb (g_rgb, n x 3) into gw / gb
 * (zeroed or accumulating, the layouts of w / b). Returns 0, -1 for a network index outside
 * [0, num_nets), -2 out of memory. */
int kn_mlp_backward(const float *const *w, const float *const *b, int64_t num_nets, const int64_t *net,
                    const float *pos, const float *dir, const float *g_sigma, const float *g_rgb, int64_t n,
                    float *const *gw, float *const *gb, int nthreads) {
    const kn_params p = kn_make_params(w, b, NULL, 0);
    if (n <= 0) return 0;
    int64_t *start;
    int32_t *order;
    int rc = kn_sort_by_net(net, n, num_nets, &start, &order);
    if (rc != 0) return rc;
    /* Networks with samples, the busiest first (dynamic scheduling then balances the threads). */
    kn_count *nets = malloc((size_t)num_nets * sizeof(kn_count));
    int64_t m = 0;
    if (nets == NULL) rc = -2;
    for (int64_t k = 0; k < num_nets && rc == 0; k++)
        if (start[k + 1] > start[k]) nets[m++] = (kn_count){start[k + 1] - start[k], k};
    qsort(nets, (size_t)m, sizeof(kn_count), busiest_first);
#pragma omp parallel num_threads(nthreads) if (rc == 0)
    {
        kn_net_grad *G = aligned_alloc(64, (sizeof(kn_net_grad) + 63) / 64 * 64);
        if (G == NULL) {
#pragma omp atomic write
            rc = -2;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < m; t++) {
            if (G == NULL) continue;
            const int64_t k = nets[t].net;
            memset(G, 0, sizeof(*G));
            for (int64_t s = start[k]; s < start[k + 1]; s += 16) {
                const int count = (int)(start[k + 1] - s < 16 ? start[k + 1] - s : 16);
                block_backward(&p, k, order + s, count, pos, dir, g_sigma, g_rgb, G);
            }
            add_net_grad(G, gw, gb, k);
        }
        free(G);
    }
    free(nets);
    free(start);
    free(order);
    return rc;
}
