/* Shared by the fp32 (kn_mlp.c) and bf16 (kn_mlp_amx.c) tiny-MLP kernels: NeRF's positional
 * encoding of a block of samples, vectorised across them, and exp for float lanes. The includer
 * defines KN_LANES and the vector types vf (KN_LANES floats), vi, vf8 (8 floats), vd (8 doubles)
 * and sel(). */
#ifndef KN_ENC_H
#define KN_ENC_H

#include <string.h>

static const double SIN_C[13] = {1.0, -0.16666666666666666, 0.008333333333333333, -0.0001984126984126984,
                                 2.7557319223985893e-06, -2.505210838544172e-08, 1.6059043836821613e-10,
                                 -7.647163731819816e-13, 2.8114572543455206e-15, -8.22063524662433e-18,
                                 1.9572941063391263e-20, -3.868170170630684e-23, 6.446950284384474e-26};
static const double COS_C[13] = {1.0, -0.5, 0.041666666666666664, -0.001388888888888889, 2.48015873015873e-05,
                                 -2.755731922398589e-07, 2.08767569878681e-09, -1.1470745597729725e-11,
                                 4.779477332387385e-14, -1.5619206968586225e-16, 4.110317623312165e-19,
                                 -8.896791392450574e-22, 1.6117375710961184e-24};

/* sin and cos in double (8 lanes): reduce by multiples of 2 pi to |x| <= pi, then Taylor
 * series to degree 25 / 24 (truncation error < 3e-15 there). */
AI void sincos_d(vd x, vd *s, vd *c) {
    const double two_pi_hi = 6.283185307179586, two_pi_lo = 2.4492935982947064e-16;
    const vd shifter = (vd){0} + 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    vd n = (x * 0.15915494309189535 + shifter) - shifter;
    x = (x - n * two_pi_hi) - n * two_pi_lo;
    vd x2 = x * x, ps = (vd){0} + SIN_C[12], pc = (vd){0} + COS_C[12];
    for (int i = 11; i >= 0; i--) {
        ps = ps * x2 + SIN_C[i];
        pc = pc * x2 + COS_C[i];
    }
    *s = ps * x;
    *c = pc;
}

/* NeRF's encoding of 16 samples' 3-vectors, vin[d][lane], into out[0 .. 3 + 6 L - 1]:
 * [x, sin(x), cos(x), sin(2x), cos(2x), ...] per frequency three sines then three cosines
 * (kilonerf.kernels.encoding.positional_encoding). sin/cos(2^l x) come from the double-angle
 * recurrence in double precision: its error grows as 2^l, i.e. to ~1e-13 at l = 9, far below
 * float rounding, so the result equals sinf of the exact argument to within an ulp. */
__attribute__((unused)) static void encode(const float vin[3][KN_LANES], int nfreq, vf *out) {
    for (int d = 0; d < 3; d++) {
        memcpy(&out[d], vin[d], sizeof(vf));
        for (int half = 0; half < KN_LANES / 8; half++) {
            vf8 xf;
            memcpy(&xf, vin[d] + 8 * half, sizeof(xf));
            vd s, c;
            sincos_d(__builtin_convertvector(xf, vd), &s, &c);
            for (int l = 0; l < nfreq; l++) {
                vf8 sf = __builtin_convertvector(s, vf8), cf = __builtin_convertvector(c, vf8);
                memcpy((float *)&out[3 + 6 * l + d] + 8 * half, &sf, sizeof(sf));
                memcpy((float *)&out[3 + 6 * l + 3 + d] + 8 * half, &cf, sizeof(cf));
                vd s2 = 2.0 * s * c, c2 = (c - s) * (c + s);
                s = s2;
                c = c2;
            }
        }
    }
}

/* exp(x) for float lanes, |relative error| ~ 1e-7: 2^n times a degree-7 polynomial. */
AI vf vexp(vf x) {
    const vf lo = (vf){0} - 87.0f, hi = (vf){0} + 88.0f;
    x = sel((vi)(x < lo), lo, x);
    x = sel((vi)(x > hi), hi, x);
    const vf shifter = (vf){0} + 12582912.0f; /* 1.5 * 2^23 */
    vf t = x * 1.44269504088896341f + shifter;
    vi n = (vi)t - (vi)shifter;
    vf nf = t - shifter;
    vf r = (x - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;
    vf p = (vf){0} + (1.0f / 5040.0f);
    p = p * r + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vf)((n + 127) << 23);
}

#endif
