/* Adam steps on parameters made of rows (a grid's nodes, a grid of networks' layers), in
 * place and only on some rows: what torch would do with a gather, the update and a scatter per
 * tensor, in one pass (kernels/adam.py).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* Adam on one value, in place: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
 * p -= step_size m / (sqrt(v) / bc2_sqrt + eps), with step_size = lr / (1 - b1^t). */
static inline void adam_value(float *p, float g, float *m, float *v, float b1, float b2, float step_size,
                              float bc2_sqrt, float eps)
{
    *m = b1 * *m + (1.0f - b1) * g;
    *v = b2 * *v + (1.0f - b2) * g * g;
    *p -= step_size * *m / (sqrtf(*v) / bc2_sqrt + eps);
}

/* adam_value on n values. */
static inline void adam_values(float *p, const float *g, float *m, float *v, int64_t n, float b1, float b2,
                               float step_size, float bc2_sqrt, float eps)
{
    for (int64_t c = 0; c < n; ++c)
        adam_value(p + c, g[c], m + c, v + c, b1, b2, step_size, bc2_sqrt, eps);
}

/* One Adam step (torch.optim.Adam's arithmetic, no weight decay) on every row of a (rows, C)
 * parameter whose gradient row has a non-zero entry; those gradient rows are zeroed. Rows
 * without a gradient keep their value and moments (instant-ngp skips them the same way).
 * decay != 0: a penalty's gradient decay * param is added to every row's gradient first (so
 * every row is updated). Returns the number of rows updated. */
int64_t kn_row_adam(float *param, float *grad, float *exp_avg, float *exp_avg_sq, int64_t rows, int64_t channels,
                     double lr, double beta1, double beta2, double eps, double step, double decay, int nthreads)
{
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float step_size = (float)(lr / (1.0 - pow(beta1, step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
    const float epsf = (float)eps;
    int64_t updated = 0;
    if (channels == 1) { /* a branch per value would mispredict: every value computed, kept where on */
        const float dec = (float)decay;
#pragma omp parallel for simd num_threads(nthreads) schedule(static) reduction(+ : updated)
        for (int64_t r = 0; r < rows; ++r) {
            const int on = grad[r] != 0.0f || dec != 0.0f;
            float p = param[r], m = exp_avg[r], v = exp_avg_sq[r];
            adam_value(&p, grad[r] + dec * param[r], &m, &v, b1, b2, step_size, bc2_sqrt, epsf);
            exp_avg[r] = on ? m : exp_avg[r];
            exp_avg_sq[r] = on ? v : exp_avg_sq[r];
            param[r] = on ? p : param[r];
            grad[r] = 0.0f;
            updated += on;
        }
        return updated;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(+ : updated)
    for (int64_t r = 0; r < rows; ++r) {
        float *g = grad + r * channels;
        const int64_t off = r * channels;
        int any = decay != 0.0;
        for (int64_t c = 0; c < channels; ++c) /* no early exit: this loop vectorises */
            any |= g[c] != 0.0f;
        if (!any)
            continue;
        if (decay != 0.0)
            for (int64_t c = 0; c < channels; ++c)
                g[c] += (float)decay * param[off + c];
        adam_values(param + off, g, exp_avg + off, exp_avg_sq + off, channels, b1, b2, step_size, bc2_sqrt, epsf);
        memset(g, 0, (size_t)channels * sizeof(float));
        ++updated;
    }
    return updated;
}

/* One Adam step on the listed rows of a (*, rowsize) parameter: row rows[i] from the compact
 * gradient row grad[i], with its own bias corrections bc1[i], bc2[i] (rows are trained on
 * different steps). Arithmetic per value: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
 * p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps). Rows must be distinct. */
void kn_indexed_adam(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, const int64_t *rows,
                     int64_t count, int64_t rowsize, const float *bc1, const float *bc2, double lr, double beta1,
                     double beta2, double eps, int nthreads)
{
    const float b1 = (float)beta1, b2 = (float)beta2, epsf = (float)eps;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < count; ++i) {
        const int64_t off = rows[i] * rowsize;
        adam_values(param + off, grad + i * rowsize, exp_avg + off, exp_avg_sq + off, rowsize, b1, b2,
                    (float)(lr / bc1[i]), sqrtf(bc2[i]), epsf);
    }
}
