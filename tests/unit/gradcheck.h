/* gradcheck.h — finite-difference gradient checks in double precision (test-only).
 *
 * How the checks work, and why this way: the code under test is the f32 code
 * the trainer runs (kernels/cpu/ops_backward.c, workers/omniquant.c). Each
 * test also writes the op's FORWARD a second time, plainly and in double, as
 * a function of the parameter being checked; central differences of that
 * double forward give the reference gradient (truncation error ~h², rounding
 * ~1e-16/h: ~1e-10 for h = 1e-5), and the f32 analytic gradient must agree
 * with it to a relative error ‖analytic − fd‖₂ / ‖fd‖₂ below 1e-4. A
 * single-precision difference quotient could not tell a 1e-4 error from
 * rounding; instantiating the production code in double would check the
 * formulas but not the f32 code that runs. The f32 gradient itself is good to
 * ~1e-6 relative, so the bound leaves room for rounding and none for a wrong
 * formula, a missed term or a wrong index.
 *
 * Large tensors are checked on a fixed pseudo-random subset of their entries.
 *
 * Kinks: the quantizer's surrogate is only piecewise smooth (the max of a
 * group changes hands where two weights tie). When an entry lies within h of
 * such a point the one-sided differences disagree with each other, and keep
 * disagreeing when h shrinks 16× (curvature would shrink the gap 16×); there
 * the analytic gradient must equal one of them (the side whose piece holds
 * the point), and that is what is compared. A wrong formula is caught all the
 * same: away from kinks both sides agree, and at a kink neither side matches
 * a wrong value. Kinks are counted in the printed line.
 */
#ifndef QS_TEST_GRADCHECK_H
#define QS_TEST_GRADCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define GC_TOL 1e-4

static uint64_t gc_rng = 0x9e3779b97f4a7c15ull;

static double gc_urand(void) /* xorshift64, uniform in [-1, 1) */
{
    gc_rng ^= gc_rng << 13;
    gc_rng ^= gc_rng >> 7;
    gc_rng ^= gc_rng << 17;
    return (double)(gc_rng >> 11) / 4503599627370496.0 - 1.0;
}

/* f32 values (so f32 and double code see the same numbers) and their double copy. */
static float *gc_randf(int64_t n, double scale)
{
    float *v = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = (float)(gc_urand() * scale);
    return v;
}

static double *gc_tod(const float *x, int64_t n)
{
    double *d = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

typedef double (*gc_loss_fn)(void *ctx);

/* Central differences of loss(ctx) in each checked entry of p (which the
 * loss reads through ctx), against analytic[]. Checks every entry when
 * n <= max_entries, else max_entries spread pseudo-randomly. Returns the
 * relative error and prints it with `name`. */
static double gc_check(const char *name, gc_loss_fn loss, void *ctx, double *p, int64_t n, const float *analytic,
                       int64_t max_entries)
{
    double num = 0.0, den = 0.0, base = loss(ctx);
    int64_t count = n <= max_entries ? n : max_entries, kinks = 0;
    uint64_t pick = 0x2545f4914f6cdd1dull ^ (uint64_t)n;
    for (int64_t k = 0; k < count; k++) {
        int64_t i = k;
        if (n > max_entries) {
            pick ^= pick << 13, pick ^= pick >> 7, pick ^= pick << 17;
            i = (int64_t)(pick % (uint64_t)n);
        }
        double save = p[i], h = 1e-5 * (fabs(save) > 1.0 ? fabs(save) : 1.0);
        p[i] = save + h;
        double lp = loss(ctx);
        p[i] = save - h;
        double lm = loss(ctx);
        p[i] = save;
        double fd = (lp - lm) / (2.0 * h), right = (lp - base) / h, left = (base - lm) / h;
        if (fabs(right - left) > 1e-3 * (fabs(right) + fabs(left)) + 1e-300) {
            /* the sides disagree: curvature (their gap shrinks with h) or a kink (it does not) */
            double h2 = h / 16.0;
            p[i] = save + h2;
            double lp2 = loss(ctx);
            p[i] = save - h2;
            double lm2 = loss(ctx);
            p[i] = save;
            double right2 = (lp2 - base) / h2, left2 = (base - lm2) / h2;
            if (fabs(right2 - left2) < 0.25 * fabs(right - left)) {
                fd = (lp2 - lm2) / (2.0 * h2);
            } else {
                fd = fabs(right2 - (double)analytic[i]) < fabs(left2 - (double)analytic[i]) ? right2 : left2;
                kinks++;
            }
        }
        double d = (double)analytic[i] - fd;
        num += d * d;
        den += fd * fd;
    }
    double rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
    printf("gradcheck %-40s rel err %.2e over %lld entries (|grad| %.2e)%s\n", name, rel, (long long)count, sqrt(den),
           kinks ? " (kinks: see below)" : "");
    if (kinks) printf("          %lld of them within h of a kink: compared with the one-sided derivative\n", (long long)kinks);
    fflush(stdout);
    return rel;
}

#endif
