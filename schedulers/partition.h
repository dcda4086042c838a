/* partition.h — which rank owns which blocks.
 *
 * Each rank gets a contiguous range of blocks (activations then flow rank to
 * rank in order); the embedding stage runs on the first rank and the head
 * stage on the last. Ranges minimise the largest per-rank cost (optimal
 * linear partition by dynamic programming; ties go to the earlier split so
 * the plan is deterministic). Memory caps are checked per rank.
 */
#ifndef QS_PARTITION_H
#define QS_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include "schedulers/cost_model.h"

/* Splits n items with costs[i] into `parts` contiguous non-empty ranges
 * minimising the maximum range sum. starts[0..parts]: range r is
 * [starts[r], starts[r+1]). Requires 1 <= parts <= n. */
qs_status qs_partition_linear(const double *costs, int n, int parts, int *starts, qs_error *err);

typedef struct qs_stage_plan {
    int rank;
    int first_block, end_block; /* [first, end) */
    bool embed, head;
    double seconds;             /* this rank's own work (compute + io) */
    uint64_t peak_device, peak_host;
} qs_stage_plan;

typedef struct qs_plan {
    int n_ranks;
    int n_blocks;
    qs_stage_plan *stages;
    qs_block_cost block;        /* every block of a uniform transformer costs the same */
    qs_cost_params params;
    uint64_t device_mem, host_mem; /* caps, 0 = not checked */
    double seconds_total;       /* wall time estimate for the schedule */
    bool fits;
    char why[1024];             /* when !fits: what does not fit, and by how much */
} qs_plan;

/* device_mem/host_mem: per-rank caps (0 = unlimited). A plan that does not fit
 * is still returned (fits = false, why filled); errors are for bad arguments. */
qs_status qs_plan_make(const qs_model_config *cfg, const qs_cost_params *p, int ranks, uint64_t device_mem,
                       uint64_t host_mem, qs_plan *out, qs_error *err);
void qs_plan_free(qs_plan *plan);

#endif
