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
 * each contiguous float32. */
typedef struct {
    const float *w[5];
    const float *b[5];
} kn_params;

/* Evaluate up to 16 (kn_block16) or 8 (kn_block8) samples of network `net`: kn_mlp.c is
 * compiled once per width. pos/dir are gathered through idx (count entries, 1 <= count <=
 * width); outputs are written at out_sigma[idx[i]] and out_rgb[3 * idx[i] + c].
 * dir/out_rgb NULL: density only. */
void kn_block16(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
                const float *dir, float *out_sigma, float *out_rgb);
void kn_block8(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
               const float *dir, float *out_sigma, float *out_rgb);

/* `count` samples of one network: 16-wide blocks, and a last block of <= 8 samples 8 wide
 * (on AVX-512 machines that halves the work wasted on the idle lanes of short runs). Returns
 * the number of blocks. */
static inline int64_t kn_run(const kn_params *p, int64_t net, const int32_t *idx, int64_t count, const float *pos,
                             const float *dir, float *out_sigma, float *out_rgb) {
    int64_t s = 0, blocks = 0;
    for (; count - s > 8; s += 16, blocks++)
        kn_block16(p, net, idx + s, (int)(count - s < 16 ? count - s : 16), pos, dir, out_sigma, out_rgb);
    if (s < count) {
        kn_block8(p, net, idx + s, (int)(count - s), pos, dir, out_sigma, out_rgb);
        blocks++;
    }
    return blocks;
}

#endif
