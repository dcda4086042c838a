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
    double num = 0.0, den = 0.0;
    int64_t count = n <= max_entries ? n : max_entries;
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
        double fd = (lp - lm) / (2.0 * h), d = (double)analytic[i] - fd;
        num += d * d;
        den += fd * fd;
    }
    double rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
    printf("gradcheck %-40s rel err %.2e over %lld entries (|grad| %.2e)\n", name, rel, (long long)count, sqrt(den));
    fflush(stdout);
    return rel;
}

#endif
