/* Dense voxel grids for the fast teacher: trilinear lookups, their gradient, and an Adam step
 * that only visits the rows (lattice nodes) that received a gradient.
 *
 * Grids are channels-last, (V, C) row-major: a lookup reads 8 contiguous rows. Why native: in
 * torch, a training step of the teacher spent more time zeroing the whole grids' gradients,
 * scattering them one channel at a time and running Adam over every node than it spent on the
 * few hundred thousand nodes a step touches (see kernels/grid_ops.py).
 */
#include <math.h>
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

/* One Adam step (torch.optim.Adam's arithmetic, no weight decay) on every row of a (rows, C)
 * parameter whose gradient row has a non-zero entry; those gradient rows are zeroed. Rows
 * without a gradient keep their value and moments (instant-ngp skips them the same way).
 * Returns the number of rows updated. */
int64_t kn_grid_adam(float *param, float *grad, float *exp_avg, float *exp_avg_sq, int64_t rows, int64_t channels,
                     double lr, double beta1, double beta2, double eps, double step, int nthreads)
{
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float step_size = (float)(lr / (1.0 - pow(beta1, step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
    const float epsf = (float)eps;
    int64_t updated = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : updated)
    for (int64_t r = 0; r < rows; ++r) {
        float *g = grad + r * channels;
        int any = 0;
        for (int64_t c = 0; c < channels; ++c)
            any |= g[c] != 0.0f;
        if (!any)
            continue;
        float *p = param + r * channels, *m = exp_avg + r * channels, *v = exp_avg_sq + r * channels;
        for (int64_t c = 0; c < channels; ++c) {
            const float gc = g[c];
            m[c] = b1 * m[c] + (1.0f - b1) * gc;
            v[c] = b2 * v[c] + (1.0f - b2) * gc * gc;
            p[c] -= step_size * m[c] / (sqrtf(v[c]) / bc2_sqrt + epsf);
            g[c] = 0.0f;
        }
        ++updated;
    }
    return updated;
}
