/* The tiny MLP in bf16 (bf16 products, fp32 accumulation), up to 32 samples per block, on one of
 * two engines: AMX tiles (TDPBF16PS) or AVX512-BF16 (VDPBF16PS).
 *
 * Engines measured on the Xeon this was written on (Sapphire Rapids class, 2 cores): two fp32
 * FMAs (16 multiply-adds each) issue per cycle, one VDPBF16PS (32) every ~1.8 cycles, so the
 * AVX512-BF16 engine is slower than the fp32 kernel there (the issue expects 2x on Zen 4,
 * unmeasured here); one TDPBF16PS does 8192 multiply-adds in ~16 cycles (5.3 ns measured).
 *
 * Layout: each layer is computed transposed, out^T = W^T x^T, so that the samples stay in the
 * columns as in the fp32 kernel. A (16 x 32 bf16) = 16 output neurons x 32 inputs of W^T,
 * prepacked per network by the Python side (kilonerf.kernels.cpu.amx_tiles); B (16 rows of
 * 16 pairs) = the activations, row p holding inputs 2p and 2p + 1 of the 16 samples
 * interleaved; C (16 x 16 fp32) = 16 neurons x 16 samples, i.e. one vector per neuron. The
 * AVX512-BF16 engine reads the same A tiles: the dword at row m, column p is the pair of
 * weights that VDPBF16PS multiplies with pair row p, broadcast. Biases, activations and the
 * conversion to bf16 (round to nearest even) are done in AVX-512 between layers: every input
 * and activation is rounded to bf16 once per block, weights once per network. Padding (63 ->
 * 64 and 59 -> 64 inputs, 33 -> 48 and 3 -> 16 outputs) is zeros.
 *
 * Tiles 0..13 of a network (KN_AMX_TILES, 1 KB each): layer 0 (63 -> 32) 0..3 as
 * [out half][in half], layer 1 (32 -> 32) 4..5, layer 2 (32 -> 33) 6..8, layer 3 (59 -> 32)
 * 9..12 as [out half][in half], layer 4 (32 -> 3) 13.
 */
#include <stdint.h>
#include <string.h>

#include "kn.h"

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define KN_AMX 1
#else
#define KN_AMX 0
#endif

#define KN_LANES 16
#include "kn_vec.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
/* tileloadd does not tell the compiler that it reads memory: order the activation stores. */
#define KN_BARRIER() __asm__ volatile("" ::: "memory")

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} kn_tilecfg;

int kn_bf16_engines(void) {
    return KN_BF16_AVX512 | (KN_AMX && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? KN_BF16_AMX : 0);
}

#if KN_AMX

/* Tiles 0..7 all 16 rows x 64 bytes. A constant: _tile_loadconfig tells the compiler it reads
 * 8 bytes only, so a configuration built on the stack could be partly left unwritten. */
static const kn_tilecfg KN_TILECFG __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

void kn_amx_begin(void) { _tile_loadconfig(&KN_TILECFG); }

void kn_amx_end(void) { _tile_release(); }
#else
void kn_amx_begin(void) {}
void kn_amx_end(void) {}
#endif

/* Pair rows: element 2n = a[n], 2n + 1 = b[n] (bf16, round to nearest even). */
AI __m512i pack_pair(vf a, vf b) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                           21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh((__m512)b, (__m512)a));
}

AI vf load_row(const float *c) { return (vf)_mm512_load_ps(c); }

/* rows[0 .. 2n-1] = f(C[first + q] + bias[q]) for q < 2n as n pair rows. */
AI void repack(const float (*C)[16], int first, const float *bias, int n, int relu, __m512i *rows) {
    for (int p = 0; p < n; p++) {
        vf a = load_row(C[first + 2 * p]) + bias[2 * p], b = load_row(C[first + 2 * p + 1]) + bias[2 * p + 1];
        if (relu) {
            a = (vf)_mm512_max_ps((__m512)a, _mm512_setzero_ps());
            b = (vf)_mm512_max_ps((__m512)b, _mm512_setzero_ps());
        }
        _mm512_store_si512(&rows[p], pack_pair(a, b));
    }
}

/* sin and cos of 16 float lanes to ~1e-6: reduce to |x| <= pi, Taylor series to degree 15 / 16. */
AI void sincos_f(vf x, vf *s, vf *c) {
    static const float SIN_F[8] = {-1.0f / 1307674368000.0f, 1.0f / 6227020800.0f, -1.0f / 39916800.0f,
                                   1.0f / 362880.0f, -1.0f / 5040.0f, 1.0f / 120.0f, -1.0f / 6.0f, 1.0f};
    static const float COS_F[9] = {1.0f / 20922789888000.0f, -1.0f / 87178291200.0f, 1.0f / 479001600.0f,
                                   -1.0f / 3628800.0f, 1.0f / 40320.0f, -1.0f / 720.0f, 1.0f / 24.0f, -0.5f, 1.0f};
    const vf shifter = (vf){0} + 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const vf n = (x * 0.159154943f + shifter) - shifter;
    x = (x - n * 6.28318548f) + n * 1.74845553e-7f; /* float(2 pi) exceeds 2 pi by 1.748e-7 */
    const vf x2 = x * x;
    vf ps = (vf){0} + SIN_F[0], pc = (vf){0} + COS_F[0];
    for (int i = 1; i < 8; i++) ps = ps * x2 + SIN_F[i];
    for (int i = 1; i < 9; i++) pc = pc * x2 + COS_F[i];
    *s = ps * x;
    *c = pc;
}

/* The encoding as kn_enc.h's encode, in float: sin / cos (2^l x) by the double-angle
 * recurrence in float, whose error (~2^l x 1e-7, i.e. < 1e-4 at l = 9) is far below the bf16
 * rounding that follows (2^-9 relative). */
static void encode_f(const float vin[3][16], int nfreq, vf *out) {
    for (int d = 0; d < 3; d++) {
        vf x;
        memcpy(&x, vin[d], sizeof(x));
        out[d] = x;
        vf s, c;
        sincos_f(x, &s, &c);
        for (int l = 0; l < nfreq; l++) {
            out[3 + 6 * l + d] = s;
            out[3 + 6 * l + 3 + d] = c;
            vf s2 = 2.0f * s * c, c2 = (c - s) * (c + s);
            s = s2;
            c = c2;
        }
    }
}

#define TILE(t) (wt + (t) * 512)

/* The AVX512-BF16 engine's layer: C[16 j + m] = sum over in chunks c of tile (t0 + j nin + c)
 * times X[16 c ..], for out chunks j < nout and the first `rows` neurons of each. */
AI void dp_layer(const uint16_t *wt, int t0, int nout, int nin, int rows, const __m512i *X, float (*C)[16]) {
    for (int j = 0; j < nout; j++) {
        __m512 acc[16];
        for (int m = 0; m < rows; m++) acc[m] = _mm512_setzero_ps();
        for (int c = 0; c < nin; c++) {
            const uint32_t *A = (const uint32_t *)TILE(t0 + j * nin + c);
            for (int k = 0; k < 16; k++) {
                const __m512bh x = (__m512bh)X[16 * c + k];
                for (int m = 0; m < rows; m++)
                    acc[m] = _mm512_dpbf16_ps(acc[m], x, (__m512bh)_mm512_set1_epi32((int)A[16 * m + k]));
            }
        }
        for (int m = 0; m < rows; m++) _mm512_store_ps(C[16 * j + m], acc[m]);
    }
}

/* One half (16 samples) of a block in flight: its B operand rows and its C tiles written back. */
typedef struct {
    __m512i X[32];                         /* 32 pair rows (64 inputs) */
    float C[48][16] __attribute__((aligned(64))); /* neuron x sample */
    const int32_t *idx;
    int count;
} kn_half;

/* One layer of half h: nout out chunks x nin in chunks of tiles t0 .., the first `rows` neurons
 * of each out chunk used, into h->C[0 .. 16 nout - 1]. The AMX tile numbers are constants, so
 * each shape the network has is spelled out. */
#if KN_AMX
#define AMX_LAYER_2x2(h, t0)                                                                                     \
    do {                                                                                                         \
        _tile_zero(0);                                                                                           \
        _tile_zero(1);                                                                                           \
        _tile_loadd(2, &(h)->X[0], 64);                                                                          \
        _tile_loadd(3, &(h)->X[16], 64);                                                                         \
        _tile_loadd(4, TILE(t0), 64);                                                                            \
        _tile_loadd(5, TILE(t0 + 1), 64);                                                                        \
        _tile_loadd(6, TILE(t0 + 2), 64);                                                                        \
        _tile_loadd(7, TILE(t0 + 3), 64);                                                                        \
        _tile_dpbf16ps(0, 4, 2);                                                                                 \
        _tile_dpbf16ps(1, 6, 2);                                                                                 \
        _tile_dpbf16ps(0, 5, 3);                                                                                 \
        _tile_dpbf16ps(1, 7, 3);                                                                                 \
        _tile_stored(0, (h)->C[0], 64);                                                                          \
        _tile_stored(1, (h)->C[16], 64);                                                                         \
    } while (0)
#define AMX_LAYER_1(h, t0)                                                                                       \
    do {                                                                                                         \
        _tile_zero(0);                                                                                           \
        _tile_loadd(2, &(h)->X[0], 64);                                                                          \
        _tile_loadd(4, TILE(t0), 64);                                                                            \
        _tile_dpbf16ps(0, 4, 2);                                                                                 \
        _tile_stored(0, (h)->C[0], 64);                                                                          \
    } while (0)
#define AMX_LAYER_2(h, t0)                                                                                       \
    do {                                                                                                         \
        _tile_zero(0);                                                                                           \
        _tile_zero(1);                                                                                           \
        _tile_loadd(2, &(h)->X[0], 64);                                                                          \
        _tile_loadd(4, TILE(t0), 64);                                                                            \
        _tile_loadd(5, TILE(t0 + 1), 64);                                                                        \
        _tile_dpbf16ps(0, 4, 2);                                                                                 \
        _tile_dpbf16ps(1, 5, 2);                                                                                 \
        _tile_stored(0, (h)->C[0], 64);                                                                          \
        _tile_stored(1, (h)->C[16], 64);                                                                         \
    } while (0)
#define AMX_LAYER_3(h, t0)                                                                                       \
    do {                                                                                                         \
        _tile_zero(0);                                                                                           \
        _tile_zero(1);                                                                                           \
        _tile_zero(3);                                                                                           \
        _tile_loadd(2, &(h)->X[0], 64);                                                                          \
        _tile_loadd(4, TILE(t0), 64);                                                                            \
        _tile_loadd(5, TILE(t0 + 1), 64);                                                                        \
        _tile_loadd(6, TILE(t0 + 2), 64);                                                                        \
        _tile_dpbf16ps(0, 4, 2);                                                                                 \
        _tile_dpbf16ps(1, 5, 2);                                                                                 \
        _tile_dpbf16ps(3, 6, 2);                                                                                 \
        _tile_stored(0, (h)->C[0], 64);                                                                          \
        _tile_stored(1, (h)->C[16], 64);                                                                         \
        _tile_stored(3, (h)->C[32], 64);                                                                         \
    } while (0)
#else
#define AMX_LAYER_2x2(h, t0) ((void)0)
#define AMX_LAYER_1(h, t0) ((void)0)
#define AMX_LAYER_2(h, t0) ((void)0)
#define AMX_LAYER_3(h, t0) ((void)0)
#endif

#define LAYER(h, t0, nout, nin, rows, amx_shape)                                                                 \
    do {                                                                                                         \
        KN_BARRIER();                                                                                            \
        if (p->amx)                                                                                              \
            amx_shape((h), (t0));                                                                                \
        else                                                                                                     \
            dp_layer(wt, (t0), (nout), (nin), (rows), (h)->X, (h)->C);                                           \
    } while (0)

/* Up to 32 samples of network `net` (count 1 .. 32) as two halves of 16 whose layers are
 * interleaved: one half's AVX-512 work (bias, activation, bf16 packing) then overlaps the
 * other's matrix products, which would otherwise wait on each other in one chain. */
void kn_block_bf16(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                   const float *dir, float *out_sigma, float *out_rgb) {
    const int H = KN_H_DIM;
    const uint16_t *wt = p->wt + net * (KN_AMX_TILES * 512);
    const float *b0 = p->b[0] + net * H, *b1 = p->b[1] + net * H, *b2 = p->b[2] + net * (H + 1);
    const float *b3 = p->b[3] + net * H, *b4 = p->b[4] + net * 3;
    const int colour = dir != NULL && out_rgb != NULL;
    kn_half half[2];
    const int nh = count > 16 ? 2 : 1;
    float lanes[3][KN_LANES] __attribute__((aligned(64)));
    vf enc[KN_PE_POS + 1];
    enc[KN_PE_POS] = (vf){0};
    for (int k = 0; k < nh; k++) {
        kn_half *h = &half[k];
        h->idx = idx + 16 * k;
        h->count = k == 0 ? (count < 16 ? count : 16) : count - 16;
        kn_gather3(pos, h->idx, h->count, KN_LANES, lanes[0]);
        encode_f(lanes, KN_LP, enc);
        for (int q = 0; q < 32; q++) h->X[q] = pack_pair(enc[2 * q], enc[2 * q + 1]);
    }
    /* Layer 0: 64 (63) -> 32, ReLU. */
    for (int k = 0; k < nh; k++) LAYER(&half[k], 0, 2, 2, 16, AMX_LAYER_2x2);
    /* Layer 1: 32 -> 32, ReLU. */
    for (int k = 0; k < nh; k++) {
        repack((const float(*)[16])half[k].C, 0, b0, 16, 1, half[k].X);
        LAYER(&half[k], 4, 2, 1, 16, AMX_LAYER_2);
    }
    /* Layer 2: 32 -> 33 (raw density, then 32 features); density only: the first 16 outputs. */
    for (int k = 0; k < nh; k++) {
        repack((const float(*)[16])half[k].C, 0, b1, 16, 1, half[k].X);
        if (colour)
            LAYER(&half[k], 6, 3, 1, 16, AMX_LAYER_3);
        else
            LAYER(&half[k], 6, 1, 1, 1, AMX_LAYER_1);
    }
    for (int k = 0; k < nh; k++) {
        kn_half *h = &half[k];
        float sig[KN_LANES] __attribute__((aligned(64)));
        vf sigma = load_row(h->C[0]) + b2[0];
        memcpy(sig, &sigma, sizeof(sig));
        for (int i = 0; i < h->count; i++) out_sigma[h->idx[i]] = sig[i];
    }
    if (!colour) return;
    /* Layer 3: 32 features + 27 (28) direction inputs -> 32, ReLU. */
    vf denc[KN_PE_DIR + 1];
    denc[KN_PE_DIR] = (vf){0};
    for (int k = 0; k < nh; k++) {
        kn_half *h = &half[k];
        repack((const float(*)[16])h->C, 1, b2 + 1, 16, 0, h->X);
        kn_gather3(dir, h->idx, h->count, KN_LANES, lanes[0]);
        encode_f(lanes, KN_LD, denc);
        for (int q = 0; q < 14; q++) h->X[16 + q] = pack_pair(denc[2 * q], denc[2 * q + 1]);
        h->X[30] = h->X[31] = _mm512_setzero_si512();
        LAYER(h, 9, 2, 2, 16, AMX_LAYER_2x2);
    }
    /* Layer 4: 32 -> 3 (16 with zero rows), sigmoid. */
    for (int k = 0; k < nh; k++) {
        repack((const float(*)[16])half[k].C, 0, b3, 16, 1, half[k].X);
        LAYER(&half[k], 13, 1, 1, 3, AMX_LAYER_1);
    }
    for (int k = 0; k < nh; k++) {
        kn_half *h = &half[k];
        float rgb[3][KN_LANES] __attribute__((aligned(64)));
        for (int c = 0; c < 3; c++) {
            vf o = load_row(h->C[c]) + b4[c];
            vf sgm = 1.0f / (1.0f + vexp(-o));
            memcpy(rgb[c], &sgm, sizeof(vf));
        }
        for (int i = 0; i < h->count; i++)
            for (int c = 0; c < 3; c++) out_rgb[3 * (int64_t)h->idx[i] + c] = rgb[c][i];
    }
}

#else /* no AVX512-BF16 on the build machine: no bf16 engine */

int kn_bf16_engines(void) { return 0; }
void kn_amx_begin(void) {}
void kn_amx_end(void) {}
void kn_block_bf16(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                   const float *dir, float *out_sigma, float *out_rgb) {
    (void)p, (void)net, (void)idx, (void)count, (void)pos, (void)dir, (void)out_sigma, (void)out_rgb;
}

#endif
