/* threads.h — how many threads a process computes with, from its CPU
 * affinity (see threads.c). */
#ifndef QS_CPU_THREADS_H
#define QS_CPU_THREADS_H

typedef struct qs_cpu_threads {
    int affinity;   /* CPUs in the affinity mask (sched_getaffinity) */
    int available;  /* CPUs the process could be given: its cgroup's cpuset, else the online CPUs */
    int threads;    /* OpenMP and OpenBLAS threads: affinity, or OMP_NUM_THREADS when smaller */
    char cpus[64];  /* the mask as a list, "0-1" */
} qs_cpu_threads;

/* Fills t without changing anything. */
void qs_cpu_threads_probe(qs_cpu_threads *t);

/* Probes and sets OpenMP's and OpenBLAS's thread counts to t->threads. */
void qs_cpu_threads_init(qs_cpu_threads *t);

/* `ranks` processes share this node. A process whose mask holds more than
 * its share of the available CPUs (unbound: `mpirun --bind-to none`) runs
 * available / ranks threads instead of one per CPU of its mask, so that the
 * node's ranks together use every core once; then sets the counts. */
void qs_cpu_threads_share(qs_cpu_threads *t, int ranks);

#endif
