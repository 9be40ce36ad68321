/* The fast renderer's march, evaluation and compositing, fused per tile of rays.
 *
 * Same semantics as the torch loop in kilonerf/render/fast.py: sample k of a ray sits at
 * t = near + k * step; a sample is a candidate if its point lies in an occupied voxel (and
 * inside the network grid); every pass, each active ray takes its next `samples_per_pass`
 * candidates, they are evaluated grouped by network and composited front to back; a ray leaves
 * once its transmittance is <= ert_threshold or its candidates run out.
 *
 * Compiled with -ffp-contract=off: positions must round exactly as the torch code's separate
 * multiply and add do, so that both renderers pick the same samples.
 *
 * Tiles of consecutive rays (image rows) are independent: each OpenMP thread takes whole
 * tiles, so there is no synchronisation inside a pass, and consecutive rays hit few networks,
 * which keeps the per-network sample runs long.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

typedef struct {
    const float *w[5];
    const float *b[5];
    const uint16_t *wt; /* NULL: fp32 kernels; else bf16 tiles, on AMX if bf16_amx (kn_params) */
    int32_t bf16_amx;
    int64_t num_nets;
    float grid_min[3], grid_max[3];
    int32_t grid_res[3];
    const uint8_t *occ_bits; /* NULL: no occupancy grid (only the network grid's box counts) */
    float occ_min[3], occ_max[3];
    int32_t occ_res[3];
    int32_t occ_same_box; /* occupancy box == network grid box: the grid test is implied */
    /* Coarse skip grid (OccupancyGrid.coarse_skip_grid: one ring of cells around the box, True
     * where an occupied voxel lies within one coarse cell); NULL: no coarse skipping. */
    const uint8_t *coarse;
    int32_t coarse_res[3];
    float coarse_cell[3];
    int64_t n_rays;
    const float *origins, *dirs, *near, *step; /* (N, 3), (N, 3), (N,), (N,) */
    const int64_t *k_lo, *k_count;             /* per ray: first sample index and how many */
    float ert_threshold;
    int32_t samples_per_pass;
    int32_t leaky_density; /* 0: ReLU, 1: LeakyReLU(0.01) */
    int32_t count_candidates;
    int32_t tile_rays;
    int32_t nthreads;
    float *rgb, *depth, *acc; /* (N, 3), (N,), (N,) outputs, background not added */
    int64_t evaluated, candidates, passes, blocks;
    double seconds[4]; /* thread-seconds in march, sort, MLP evaluation, compositing */
} kn_render_args;

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
#define VL 16
/* volume.MAX_OPTICAL_THICKNESS: the opacity is 1 to float precision beyond it. */
#define KN_MAX_OPTICAL_THICKNESS 30.0f

static inline vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

/* Where the 16 samples of a candidate_mask call go: network, cell-local position, t. */
typedef struct {
    int32_t net[VL] __attribute__((aligned(64)));
    float local[3][VL] __attribute__((aligned(64)));
    float t[VL] __attribute__((aligned(64)));
} lane_samples;

/* NetworkGrid.locate for the 16 points (meaningful in the lanes inside the grid's box). */
static inline void locate_lanes(const kn_render_args *A, const vf t, const vf p[3], lane_samples *L) {
    vi net = (vi){0};
    for (int a = 0; a < 3; a++) {
        const float lo = A->grid_min[a], hi = A->grid_max[a], top = (float)(A->grid_res[a] - 1);
        const vf u = (p[a] - lo) / (hi - lo) * (float)A->grid_res[a];
        vf cu = vsel(u > 0.0f, u, (vf){0});
        cu = vsel(cu < top, cu, (vf){0} + top);
        const vi cell = __builtin_convertvector(cu, vi);
        vf l = (u - __builtin_convertvector(cell, vf)) * 2.0f - 1.0f;
        l = vsel(l > -1.0f, l, (vf){0} - 1.0f);
        l = vsel(l < 1.0f, l, (vf){0} + 1.0f);
        memcpy(L->local[a], &l, sizeof(l));
        net = net * A->grid_res[a] + cell;
    }
    memcpy(L->net, &net, sizeof(net));
    memcpy(L->t, &t, sizeof(t));
}

/* Bit i set: sample k0 + i of ray r is a candidate (k0 + i < k_end). The 16 samples are
 * computed in vector lanes with exactly the torch renderer's arithmetic (IEEE multiply, add
 * and divide, no contraction; truncation equals floor since inside points have u >= 0).
 * With L, the candidates' networks, local positions and t are stored there too. */
static inline uint32_t candidate_mask(const kn_render_args *A, int64_t r, int64_t k0, int64_t k_end,
                                      lane_samples *L) {
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const vf kf = __builtin_convertvector((vi){0} + (int32_t)k0 + iota, vf);
    const vf prod = kf * A->step[r];
    const vf t = A->near[r] + prod;
    vf p[3];
    for (int a = 0; a < 3; a++) {
        const vf m = t * A->dirs[3 * r + a];
        p[a] = A->origins[3 * r + a] + m;
    }
    vi ok = (vi){0} - 1;
    uint32_t mask = 0;
    if (A->occ_bits != NULL) {
        vi flat = (vi){0};
        for (int a = 0; a < 3; a++) {
            const float lo = A->occ_min[a], hi = A->occ_max[a], top = (float)(A->occ_res[a] - 1);
            ok &= (p[a] >= lo) & (p[a] <= hi);
            vf u = (p[a] - lo) / (hi - lo) * (float)A->occ_res[a];
            u = vsel(u > 0.0f, u, (vf){0});
            u = vsel(u < top, u, (vf){0} + top);
            flat = flat * A->occ_res[a] + __builtin_convertvector(u, vi);
        }
        int32_t fl[VL] __attribute__((aligned(64))), okl[VL] __attribute__((aligned(64)));
        memcpy(fl, &flat, sizeof(fl));
        memcpy(okl, &ok, sizeof(okl));
        for (int i = 0; i < VL; i++) {
            const uint32_t bit = (A->occ_bits[fl[i] >> 3] >> (7 - (fl[i] & 7))) & 1u;
            mask |= (bit & (uint32_t)okl[i]) << i;
        }
        if (!A->occ_same_box) {
            vi in = (vi){0} - 1;
            for (int a = 0; a < 3; a++) in &= (p[a] >= A->grid_min[a]) & (p[a] <= A->grid_max[a]);
            int32_t inl[VL] __attribute__((aligned(64)));
            memcpy(inl, &in, sizeof(inl));
            for (int i = 0; i < VL; i++) mask &= ~((uint32_t)(inl[i] == 0) << i);
        }
    } else {
        for (int a = 0; a < 3; a++) ok &= (p[a] >= A->grid_min[a]) & (p[a] <= A->grid_max[a]);
        int32_t okl[VL] __attribute__((aligned(64)));
        memcpy(okl, &ok, sizeof(okl));
        for (int i = 0; i < VL; i++) mask |= ((uint32_t)okl[i] & 1u) << i;
    }
    const int64_t left = k_end - k0;
    if (left < VL) mask &= (1u << left) - 1u;
    if (mask != 0 && L != NULL) locate_lanes(A, t, p, L);
    return mask;
}

/* Per-ray coarse marching: sample k sits at coarse coordinates a + k b (ring included), and
 * `run` consecutive samples span less than 0.9 of a coarse cell, so if sample k lies in a False
 * coarse cell (or beyond the ring), samples k .. k + run - 1 are all empty (the same test as
 * the torch renderer's, applied at every sample instead of at run starts). */
typedef struct {
    float a[3], b[3];
    int64_t run;
} coarse_ray;

static inline void coarse_setup(const kn_render_args *A, int64_t r, coarse_ray *c) {
    float cmin = A->coarse_cell[0];
    for (int d = 0; d < 3; d++) {
        const float o = A->origins[3 * r + d], dir = A->dirs[3 * r + d];
        c->a[d] = (o + A->near[r] * dir - A->occ_min[d]) / A->coarse_cell[d] + 1.0f;
        c->b[d] = A->step[r] * dir / A->coarse_cell[d];
        if (A->coarse_cell[d] < cmin) cmin = A->coarse_cell[d];
    }
    c->run = A->step[r] > 0.0f ? (int64_t)(0.9f * cmin / A->step[r]) + 1 : 1;
}

static inline int coarse_empty(const kn_render_args *A, const coarse_ray *c, int64_t k) {
    int64_t idx[3];
    for (int d = 0; d < 3; d++) {
        float u = c->a[d] + (float)k * c->b[d];
        if (!(u >= 0.0f && u < (float)A->coarse_res[d])) return 1;
        idx[d] = (int64_t)u;
    }
    return !A->coarse[(idx[0] * A->coarse_res[1] + idx[1]) * A->coarse_res[2] + idx[2]];
}

/* Candidates of ray r in [k, k_end): the first `need` are written as samples (network,
 * local position, t) at o_net / o_local / o_t; returns the next one (the look-ahead that
 * tells whether the ray has more), or k_end if none. */
static inline int64_t collect(const kn_render_args *A, int64_t r, const coarse_ray *c, int64_t k, int64_t k_end,
                              int need, int32_t *o_net, float *o_local, float *o_t, int *got) {
    int n = 0;
    lane_samples L;
    while (k < k_end) {
        if (A->coarse != NULL && coarse_empty(A, c, k)) {
            k += c->run;
            continue;
        }
        uint32_t m = candidate_mask(A, r, k, k_end, need > 0 ? &L : NULL);
        while (m) {
            const int i = __builtin_ctz(m);
            m &= m - 1u;
            if (n == need) {
                *got = n;
                return k + i;
            }
            o_net[n] = L.net[i];
            for (int d = 0; d < 3; d++) o_local[3 * n + d] = L.local[d][i];
            o_t[n] = L.t[i];
            n++;
        }
        k += VL;
    }
    *got = n;
    return k_end;
}

/* Number of candidates of ray r in [k, k_end). */
static inline int64_t count_all(const kn_render_args *A, int64_t r, const coarse_ray *c, int64_t k, int64_t k_end) {
    int64_t n = 0;
    while (k < k_end) {
        if (A->coarse != NULL && coarse_empty(A, c, k)) {
            k += c->run;
            continue;
        }
        n += __builtin_popcount(candidate_mask(A, r, k, k_end, NULL));
        k += VL;
    }
    return n;
}

typedef struct {
    coarse_ray *coarse;
    int64_t *kpos, *kend;
    float *trans, *rgb, *depth, *acc;
    int32_t *act, *slot0, *cnt;
    int32_t *s_net, *order, *net_start;
    float *s_local, *s_dir, *s_t, *s_sigma, *s_rgb;
} tile_buf;

static int tile_alloc(tile_buf *B, int64_t rays, int64_t slots, int64_t nets) {
    memset(B, 0, sizeof(*B));
    B->coarse = malloc(rays * sizeof(coarse_ray));
    B->kpos = malloc(rays * sizeof(int64_t));
    B->kend = malloc(rays * sizeof(int64_t));
    B->trans = malloc(rays * sizeof(float));
    B->rgb = malloc(rays * 3 * sizeof(float));
    B->depth = malloc(rays * sizeof(float));
    B->acc = malloc(rays * sizeof(float));
    B->act = malloc(rays * sizeof(int32_t));
    B->slot0 = malloc(rays * sizeof(int32_t));
    B->cnt = malloc(rays * sizeof(int32_t));
    B->s_net = malloc(slots * sizeof(int32_t));
    B->order = malloc(slots * sizeof(int32_t));
    B->net_start = malloc((nets + 1) * sizeof(int32_t));
    B->s_local = malloc(slots * 3 * sizeof(float));
    B->s_dir = malloc(slots * 3 * sizeof(float));
    B->s_t = malloc(slots * sizeof(float));
    B->s_sigma = malloc(slots * sizeof(float));
    B->s_rgb = malloc(slots * 3 * sizeof(float));
    return B->coarse && B->kpos && B->kend && B->trans && B->rgb && B->depth && B->acc && B->act && B->slot0 && B->cnt &&
           B->s_net && B->order && B->net_start && B->s_local && B->s_dir && B->s_t && B->s_sigma && B->s_rgb;
}

static void tile_free(tile_buf *B) {
    void *ptrs[] = {B->coarse, B->kpos,  B->kend,      B->trans,   B->rgb,   B->depth, B->acc,     B->act,     B->slot0, B->cnt,
                    B->s_net, B->order,     B->net_start, B->s_local, B->s_dir, B->s_t, B->s_sigma, B->s_rgb};
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) free(ptrs[i]);
}

/* Render rays [r0, r1); returns evaluated samples, adds to *cand and *passes. */
static int64_t render_tile(const kn_render_args *A, const kn_params *P, tile_buf *B, int64_t r0, int64_t r1,
                           int64_t *cand, int64_t *passes, int64_t *blocks, double sec[4]) {
    double clock = omp_get_wtime(), now;
#define LAP(i) (now = omp_get_wtime(), sec[i] += now - clock, clock = now)
    const int64_t nr = r1 - r0;
    const int spp = A->samples_per_pass;
    int64_t nact = 0, evaluated = 0;
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i;
        B->kend[i] = A->k_lo[r] + A->k_count[r];
        if (A->coarse != NULL) coarse_setup(A, r, &B->coarse[i]);
        int got;
        B->kpos[i] = collect(A, r, &B->coarse[i], A->k_lo[r], B->kend[i], 0, NULL, NULL, NULL, &got);
        B->trans[i] = 1.0f;
        B->rgb[3 * i] = B->rgb[3 * i + 1] = B->rgb[3 * i + 2] = 0.0f;
        B->depth[i] = B->acc[i] = 0.0f;
        if (B->kpos[i] < B->kend[i]) B->act[nact++] = (int32_t)i;
    }
    while (nact > 0) {
        (*passes)++;
        /* March: each active ray's next candidates into consecutive slots. */
        int32_t S = 0;
        memset(B->net_start, 0, (A->num_nets + 1) * sizeof(int32_t));
        for (int64_t a = 0; a < nact; a++) {
            int64_t i = B->act[a], r = r0 + i;
            B->slot0[a] = S;
            int j = 0;
            B->kpos[i] = collect(A, r, &B->coarse[i], B->kpos[i], B->kend[i], spp, B->s_net + S, B->s_local + 3 * S,
                                 B->s_t + S, &j);
            for (int q = S; q < S + j; q++) {
                for (int d = 0; d < 3; d++) B->s_dir[3 * q + d] = A->dirs[3 * r + d];
                B->net_start[B->s_net[q] + 1]++;
            }
            S += j;
            B->cnt[a] = j;
        }
        evaluated += S;
        LAP(0);
        /* Group the slots by network (counting sort) and evaluate them 16 at a time. */
        for (int64_t k = 0; k < A->num_nets; k++) B->net_start[k + 1] += B->net_start[k];
        for (int32_t s = 0; s < S; s++) B->order[B->net_start[B->s_net[s]]++] = s;
        /* net_start[k] now holds the end of network k's run, i.e. the start of k + 1's. */
        LAP(1);
        int32_t begin = 0;
        for (int64_t k = 0; k < A->num_nets; k++) {
            int32_t end = B->net_start[k];
            if (end > begin)
                *blocks += kn_run(P, k, B->order + begin, end - begin, B->s_local, B->s_dir, B->s_sigma, B->s_rgb);
            begin = end;
        }
        LAP(2);
        /* Composite front to back (volume.composite_weights' recurrence and its cap on tau). */
        int64_t keep = 0;
        for (int64_t a = 0; a < nact; a++) {
            int64_t i = B->act[a], r = r0 + i;
            float T = B->trans[i], cr = 0.0f, cg = 0.0f, cb = 0.0f, dep = 0.0f, ac = 0.0f;
            for (int32_t s = B->slot0[a]; s < B->slot0[a] + B->cnt[a]; s++) {
                /* Terminate at the sample, not at the end of the pass: the image then does not
                   depend on how candidates are cut into passes. */
                if (T <= A->ert_threshold) break;
                float raw = B->s_sigma[s];
                float sig = raw > 0.0f ? raw : (A->leaky_density ? 0.01f * raw : 0.0f);
                float tau = fminf(sig * A->step[r], KN_MAX_OPTICAL_THICKNESS);
                float keep_frac = expf(-tau), alpha = 1.0f - keep_frac;
                float w = alpha * T;
                cr += w * B->s_rgb[3 * s];
                cg += w * B->s_rgb[3 * s + 1];
                cb += w * B->s_rgb[3 * s + 2];
                dep += w * B->s_t[s];
                ac += w;
                T = T * keep_frac;
            }
            B->rgb[3 * i] += cr;
            B->rgb[3 * i + 1] += cg;
            B->rgb[3 * i + 2] += cb;
            B->depth[i] += dep;
            B->acc[i] += ac;
            B->trans[i] = T;
            if (B->kpos[i] < B->kend[i]) {
                if (T > A->ert_threshold)
                    B->act[keep++] = (int32_t)i;
                else if (A->count_candidates)
                    *cand += count_all(A, r, &B->coarse[i], B->kpos[i], B->kend[i]);
            }
        }
        nact = keep;
        LAP(3);
    }
    for (int64_t i = 0; i < nr; i++) {
        int64_t r = r0 + i;
        for (int c = 0; c < 3; c++) A->rgb[3 * r + c] = B->rgb[3 * i + c];
        A->depth[r] = B->depth[i];
        A->acc[r] = B->acc[i];
    }
    *cand += evaluated;
    LAP(3);
#undef LAP
    return evaluated;
}

typedef struct {
    int64_t tile, work;
} tile_work;

static int heavier_first(const void *x, const void *y) {
    const tile_work *a = x, *b = y;
    return (a->work < b->work) - (a->work > b->work);
}

/* sizeof(kn_render_args), checked against the ctypes mirror when the library loads. */
int64_t kn_render_args_size(void) { return (int64_t)sizeof(kn_render_args); }

int kn_render(kn_render_args *A) {
    kn_params P;
    for (int i = 0; i < 5; i++) {
        P.w[i] = A->w[i];
        P.b[i] = A->b[i];
    }
    P.wt = A->wt;
    P.amx = A->bf16_amx;
    const int64_t tile = A->tile_rays > 0 ? A->tile_rays : 4096;
    const int64_t ntiles = (A->n_rays + tile - 1) / tile;
    int64_t evaluated = 0, cand = 0, passes = 0, blocks = 0;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int failed = 0;
    /* Heaviest tiles first (work ~ samples in the rays' ranges), so that the dynamic schedule
     * does not end with one thread on a heavy tile while the other idles. */
    tile_work *order = malloc((size_t)(ntiles > 0 ? ntiles : 1) * sizeof(tile_work));
    if (order == NULL) return -2;
    for (int64_t t = 0; t < ntiles; t++) {
        order[t].tile = t;
        order[t].work = 0;
        for (int64_t r = t * tile; r < (t + 1) * tile && r < A->n_rays; r++) order[t].work += A->k_count[r];
    }
    qsort(order, (size_t)ntiles, sizeof(tile_work), heavier_first);
#pragma omp parallel num_threads(A->nthreads) reduction(+ : evaluated, cand, passes, blocks, s0, s1, s2, s3) reduction(| : failed)
    {
        double sec[4] = {0.0, 0.0, 0.0, 0.0};
        tile_buf B;
        int ok = tile_alloc(&B, tile, tile * A->samples_per_pass, A->num_nets);
        if (!ok) failed = 1;
        if (P.wt != NULL && P.amx) kn_amx_begin(); /* the tile configuration is per thread */
#pragma omp for schedule(dynamic, 1)
        for (int64_t j = 0; j < ntiles; j++) {
            if (!ok) continue;
            int64_t t = order[j].tile;
            int64_t r0 = t * tile, r1 = r0 + tile < A->n_rays ? r0 + tile : A->n_rays;
            evaluated += render_tile(A, &P, &B, r0, r1, &cand, &passes, &blocks, sec);
        }
        if (P.wt != NULL && P.amx) kn_amx_end();
        tile_free(&B);
        s0 += sec[0];
        s1 += sec[1];
        s2 += sec[2];
        s3 += sec[3];
    }
    free(order);
    A->evaluated = evaluated;
    A->candidates = A->count_candidates ? cand : -1;
    A->passes = passes;
    A->blocks = blocks;
    A->seconds[0] = s0;
    A->seconds[1] = s1;
    A->seconds[2] = s2;
    A->seconds[3] = s3;
    return failed ? -2 : 0;
}
