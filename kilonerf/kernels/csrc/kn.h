/* Shared declarations of the native CPU kernels (tiny-MLP blocks and the fused renderer).
 *
 * Architecture fixed at compile time (the paper's): hidden 32, position encoding L = 10
 * (63 inputs), direction encoding L = 4 (27 inputs). The Python side checks the parameters
 * and falls back to the pure-torch reference for anything else.
 */
#ifndef KN_H
#define KN_H

#include <stdint.h>

#define KN_H_DIM 32
#define KN_LP 10
#define KN_LD 4
#define KN_PE_POS (3 * (1 + 2 * KN_LP))
#define KN_PE_DIR (3 * (1 + 2 * KN_LD))

/* Pointers to the five weight tensors (num_nets, in, out) and bias tensors (num_nets, out),
 * each contiguous float32; wt: NULL for the fp32 kernels, else the weights as bf16 tiles
 * (KN_AMX_TILES tiles of 16 x 32 per network, see kn_mlp_bf16.c) and the bf16 kernel runs, on
 * AMX tiles if amx, else with AVX512-BF16. */
typedef struct {
    const float *w[5];
    const float *b[5];
    const uint16_t *wt;
    int32_t amx;
} kn_params;

#define KN_AMX_TILES 14

/* The parameters from the Python side's pointer arrays (w, b: five pointers each). */
static inline kn_params kn_make_params(const float *const *w, const float *const *b, const uint16_t *wt, int amx) {
    kn_params p = {.wt = wt, .amx = amx};
    for (int i = 0; i < 5; i++) {
        p.w[i] = w[i];
        p.b[i] = b[i];
    }
    return p;
}

/* The bf16 kernel (kn_mlp_bf16.c). kn_bf16_engines: the engines this build and machine run
 * (KN_BF16_AVX512 | KN_BF16_AMX; asking the OS for the AMX tile state, once per process, is
 * part of it); kn_amx_begin / kn_amx_end configure and release the calling thread's tiles
 * around its AMX blocks; kn_block_bf16 evaluates 1 .. 32 samples. */
#define KN_BF16_AVX512 1
#define KN_BF16_AMX 2
int kn_bf16_engines(void);
void kn_amx_begin(void);
void kn_amx_end(void);
void kn_block_bf16(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                   const float *dir, float *out_sigma, float *out_rgb);

/* Evaluate up to 16 (kn_block16) or 8 (kn_block8) samples of network `net`: kn_mlp.c is
 * compiled once per width. pos/dir are gathered through idx (count entries, 1 <= count <=
 * width); outputs are written at out_sigma[idx[i]] and out_rgb[3 * idx[i] + c].
 * dir/out_rgb NULL: density only. */
void kn_block16(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                const float *dir, float *out_sigma, float *out_rgb);
void kn_block8(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
               const float *dir, float *out_sigma, float *out_rgb);

/* Counting sort of n samples by network (stable): *start_out (num_nets + 1 offsets) and
 * *order_out (n sample indices), both malloc'ed for the caller to free. Returns 0, -1 for a
 * network outside [0, num_nets) or -2 out of memory (nothing to free then). */
int kn_sort_by_net(const int64_t *net, int64_t n, int64_t num_nets, int64_t **start_out, int32_t **order_out);

/* out[d * width + i] = v[3 idx[i] + d] for the block's count samples; the unused lanes up to
 * width repeat the last sample (always finite inputs; their outputs are dropped). Scalar loads
 * on purpose: the compiler's AVX-512 gathers took ~40% of a bf16 block's time on the Xeon. */
__attribute__((optimize("no-tree-vectorize"), noinline, unused)) static void kn_gather3(const float *v, const int32_t *idx,
                                                                                int count, int width, float *out) {
    for (int i = 0; i < width; i++) {
        const float *s = v + 3 * (int64_t)idx[i < count ? i : count - 1];
        out[i] = s[0];
        out[width + i] = s[1];
        out[2 * width + i] = s[2];
    }
}

/* `count` samples of one network: 16-wide blocks, and a last block of <= 8 samples 8 wide
 * (on AVX-512 machines that halves the work wasted on the idle lanes of short runs). Returns
 * the number of blocks. */
static inline int64_t kn_run(const kn_params *p, int64_t net, const int32_t *idx, int64_t count, const float *pos,
                             const float *dir, float *out_sigma, float *out_rgb) {
    int64_t s = 0, blocks = 0;
    if (p->wt != NULL) { /* bf16: blocks of up to 32 samples */
        for (; s < count; s += 32, blocks++)
            kn_block_bf16(p, net, idx + s, (int)(count - s < 32 ? count - s : 32), pos, dir, out_sigma, out_rgb);
        return blocks;
    }
    for (; count - s > 8; s += 16, blocks++)
        kn_block16(p, net, idx + s, (int)(count - s < 16 ? count - s : 16), pos, dir, out_sigma, out_rgb);
    if (s < count) {
        kn_block8(p, net, idx + s, (int)(count - s), pos, dir, out_sigma, out_rgb);
        blocks++;
    }
    return blocks;
}

#endif
