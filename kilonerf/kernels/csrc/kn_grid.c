/* Dense voxel grids for the fast teacher: trilinear lookups and their gradient.
 *
 * Grids are channels-last, (V, C) row-major: a lookup reads 8 contiguous rows. Why native: in
 * torch, a training step of the teacher spent more time zeroing the whole grids' gradients and
 * scattering them one channel at a time than on the few hundred thousand nodes a step touches
 * (see kernels/grid_ops.py; the Adam step is in kn_adam.c).
 */
#include <omp.h>
#include <stdint.h>

/* out[n, c] = sum_k w[n, k] * grid[idx[n, k], c]; idx and w are (n, 8). */
void kn_grid_lerp(const float *grid, int64_t channels, const int32_t *idx, const float *w, int64_t n, float *out,
                  int nthreads)
{
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        float *o = out + i * channels;
        for (int64_t c = 0; c < channels; ++c)
            o[c] = 0.0f;
        for (int k = 0; k < 8; ++k) {
            const float wk = w[i * 8 + k];
            const float *row = grid + (int64_t)idx[i * 8 + k] * channels;
            for (int64_t c = 0; c < channels; ++c)
                o[c] += wk * row[c];
        }
    }
}

/* grad[idx[n, k], c] += w[n, k] * grad_out[n, c] over all n, k. Each thread owns a contiguous
 * range of rows and walks every sample, so no two threads write one row (no atomics, and the
 * result does not depend on the thread count). */
void kn_grid_lerp_backward(const float *grad_out, int64_t channels, const int32_t *idx, const float *w, int64_t n,
                           float *grad, int64_t rows, int nthreads)
{
#pragma omp parallel num_threads(nthreads)
    {
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
        for (int64_t i = 0; i < n; ++i) {
            const float *g = grad_out + i * channels;
            for (int k = 0; k < 8; ++k) {
                const int64_t r = idx[i * 8 + k];
                if (r < lo || r >= hi)
                    continue;
                const float wk = w[i * 8 + k];
                float *dst = grad + r * channels;
                for (int64_t c = 0; c < channels; ++c)
                    dst[c] += wk * g[c];
            }
        }
    }
}
