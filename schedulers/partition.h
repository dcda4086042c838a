/* partition.h — which ranks own which blocks: stages × replicas.
 *
 * P = S·D ranks form S stages of D replicas. Each stage gets a contiguous
 * range of blocks (activations then flow stage to stage in order); the
 * embedding stage runs on the first stage and the head stage on the last.
 * Ranks are numbered stage-major (stage s holds ranks [s·D, s·D + D)) and
 * placed ranks_per_node to a node, which decides whether a stage's
 * all-reduce and a hand-off cross nodes. Ranges minimise the largest
 * per-stage cost (binary search on the bottleneck + greedy, exact for
 * contiguous min-max partitioning; ties as the dynamic program it replaced
 * broke them, so plans and pipelined work dirs stay what they were). Memory
 * caps are checked per rank. With replicas = 0 the plan picks D: the fewest
 * stages whose ranks fit the memory caps, the remaining ranks as replicas.
 */
#ifndef QS_PARTITION_H
#define QS_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include "schedulers/cost_model.h"

/* Splits n items with costs[i] (finite, >= 0) into `parts` contiguous
 * non-empty ranges minimising the maximum range sum. starts[0..parts]: range
 * r is [starts[r], starts[r+1]). Requires 1 <= parts <= n. O(n + parts·log n)
 * for near-uniform costs, O(n·log(sum)) at worst per change of the bottleneck. */
qs_status qs_partition_linear(const double *costs, int n, int parts, int *starts, qs_error *err);

typedef struct qs_stage_plan {
    int rank;                   /* first rank of the stage (= the stage with one replica) */
    int stage;
    int replicas;
    int first_block, end_block; /* [first, end) */
    bool embed, head;
    bool reduce_across_nodes;   /* the stage's replicas span nodes */
    bool handoff_across_nodes;  /* some replica's hand-off to the next stage leaves its node */
    double seconds_reduce;      /* per block: the Hessians' ring all-reduce */
    double seconds_gather;      /* per block: the quantized rows' all-gather */
    double seconds_block;       /* per block: compute + io + reduce + gather */
    double seconds_handoff;     /* to the next stage (0 on the last), each replica its rows */
    double seconds;             /* this stage's own work: blocks × block + embedding read */
    double peak_device, peak_host; /* per rank */
} qs_stage_plan;

/* Where the predicted time goes (sums to seconds_total). */
typedef struct qs_plan_time {
    double compute, io, reduce, gather, handoff;
    double fp_pass;             /* pipelined: the FP pass that fills the stages */
} qs_plan_time;

/* One decomposition considered. At most QS_PLAN_MAX_OPTIONS (plus the one
 * chosen) are planned; a P with more divisors lists the fewest-stage ones. */
#define QS_PLAN_MAX_OPTIONS 24
typedef struct qs_plan_option {
    int stages, replicas;
    double seconds;
    bool fits;
} qs_plan_option;

typedef struct qs_plan {
    int n_ranks;
    int n_stages;               /* S */
    int n_replicas;             /* D */
    bool replicas_chosen;       /* D picked by the planner (not given) */
    int n_blocks;
    qs_stage_plan *stages;      /* n_stages */
    qs_block_cost block;        /* every block of a uniform transformer costs the same (on D replicas) */
    qs_cost_params params;
    uint64_t device_mem, host_mem; /* caps, 0 = not checked */
    double seconds_total;       /* wall time estimate for the schedule */
    qs_plan_time time;
    qs_plan_option *options;    /* the decompositions planned, fewest stages first */
    int n_options;
    int n_options_skipped;      /* valid ones beyond QS_PLAN_MAX_OPTIONS not planned */
    bool fits;
    char why[1024];             /* when !fits: what does not fit, and by how much */
} qs_plan;

/* ranks = P; replicas = D (0: the planner chooses). device_mem/host_mem: per
 * rank caps (0 = unlimited). A plan that does not fit is still returned
 * (fits = false, why filled); errors are for arguments no plan can have
 * (QS_ERR_INPUT, naming them). */
qs_status qs_plan_make(const qs_model_config *cfg, const qs_cost_params *p, int ranks, int replicas,
                       uint64_t device_mem, uint64_t host_mem, qs_plan *out, qs_error *err);
void qs_plan_free(qs_plan *plan);

#endif
