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
#define KN_LANES 16

/* Pointers to the five weight tensors (num_nets, in, out) and bias tensors (num_nets, out),
 * each contiguous float32. */
typedef struct {
    const float *w[5];
    const float *b[5];
} kn_params;

/* Evaluate up to KN_LANES samples of network `net`. pos/dir are gathered through idx
 * (count entries, 1 <= count <= KN_LANES); outputs are written at out_sigma[idx[i]] and
 * out_rgb[3 * idx[i] + c]. dir/out_rgb NULL: density only. */
void kn_block(const kn_params *p, int64_t net, const int32_t *idx, int count, const float *pos,
              const float *dir, float *out_sigma, float *out_rgb);

#endif
