/* Tiny-MLP evaluation on blocks of KN_LANES (16 or 8, one compilation each) samples of one
 * network, samples in vector lanes.
 *
 * Why samples in lanes: every layer is then a sequence of "16 samples times one broadcast
 * weight" FMAs, so the odd widths of this architecture (63, 33, 59, 3) cost no padding, and
 * the encoding is computed once per block, vectorised across samples.
 *
 * Compiled with FMA contraction on; the layers are in kn_vec.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn_vec.h"

#define KN_CAT(a, b) a##b
#define KN_XCAT(a, b) KN_CAT(a, b)
#define kn_block KN_XCAT(kn_block, KN_LANES)

void kn_block(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
              const float *dir, float *out_sigma, float *out_rgb) {
    kn_acts a;
    float lanes[3][KN_LANES] __attribute__((aligned(64)));
    kn_gather3(pos, idx, count, KN_LANES, lanes[0]);
    mlp_density(p, net, lanes, &a);
    float sig[KN_LANES] __attribute__((aligned(64)));
    memcpy(sig, &a.sigma, sizeof(sig));
    for (int i = 0; i < count; i++) out_sigma[idx[i]] = sig[i];
    if (dir == NULL || out_rgb == NULL) return;
    kn_gather3(dir, idx, count, KN_LANES, lanes[0]);
    mlp_colour(p, net, lanes, &a);
    float rgb[3][KN_LANES] __attribute__((aligned(64)));
    for (int c = 0; c < 3; c++) {
        vf sgm = sigmoid(a.logit[c]);
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

int kn_sort_by_net(const int64_t *net, int64_t n, int64_t num_nets, int64_t **start_out, int32_t **order_out) {
    int64_t *start = calloc((size_t)num_nets + 1, sizeof(int64_t));
    int32_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    int64_t *fill = malloc((size_t)(num_nets > 0 ? num_nets : 1) * sizeof(int64_t));
    int rc = start == NULL || order == NULL || fill == NULL ? -2 : 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        if (net[i] < 0 || net[i] >= num_nets) rc = -1;
        else start[net[i] + 1]++;
    }
    if (rc == 0) {
        for (int64_t k = 0; k < num_nets; k++) start[k + 1] += start[k];
        memcpy(fill, start, (size_t)num_nets * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++) order[fill[net[i]]++] = (int32_t)i;
    }
    free(fill);
    if (rc != 0) {
        free(start);
        free(order);
        return rc;
    }
    *start_out = start;
    *order_out = order;
    return 0;
}

/* wt: NULL (fp32) or the bf16 tiles of every network, amx: their engine (kn_params). */
int kn_eval(const float *const *w, const float *const *b, const uint16_t *wt, int amx, int64_t num_nets,
            const int64_t *net, const float *pos, const float *dir, int64_t n, float *sigma, float *rgb, int nthreads) {
    const kn_params p = kn_make_params(w, b, wt, amx);
    if (n <= 0) return 0;
    int64_t *start;
    int32_t *order;
    int rc = kn_sort_by_net(net, n, num_nets, &start, &order);
    if (rc != 0) return rc;
    int64_t items = 0;
    for (int64_t k = 0; k < num_nets; k++) items += (start[k + 1] - start[k] + KN_ITEM_ROWS - 1) / KN_ITEM_ROWS;
    kn_item *item = malloc((size_t)(items > 0 ? items : 1) * sizeof(kn_item));
    if (item == NULL) {
        free(start);
        free(order);
        return -2;
    }
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
    free(item);
    return 0;
}
#endif
