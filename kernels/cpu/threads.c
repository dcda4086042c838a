/* threads.c — one thread pool sized by the CPUs this process may run on.
 *
 * OpenMP (our loops, oneDNN's bf16 GEMM) and OpenBLAS get the same count:
 * the CPUs in the process's affinity mask (what mpirun/srun bound the rank
 * to), or OMP_NUM_THREADS when that is smaller; ranks that share one mask
 * (unbound) split the node's CPUs among them. More threads than CPUs only
 * makes them take turns on the same cores; fewer leaves cores idle. The
 * cores "available" to the process are its cgroup's cpuset (what Slurm gave
 * the job), or the online CPUs without one: a rank bound to fewer than its
 * share of those is warned about by the caller (pipeline/run.c).
 */
#define _GNU_SOURCE
#include "kernels/cpu/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Counts the CPUs of a list such as "0-3,8,10-11". */
static int count_list(const char *s)
{
    int n = 0;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10);
        if (end == s) break;
        long b = a;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s) break;
        }
        if (b >= a) n += (int)(b - a + 1);
        s = end;
        if (*s == ',') s++;
        else break;
    }
    return n;
}

/* The effective cpuset of this process's cgroup (v2, or v1's cpuset
 * controller), or 0 when unknown. */
static int cgroup_cpus(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[4096], v2[4200] = "", v1[4200] = "";
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = '\0';
        if (!strcmp(c1 + 1, "")) snprintf(v2, sizeof v2, "/sys/fs/cgroup%s/cpuset.cpus.effective", c2 + 1);
        else if (strstr(c1 + 1, "cpuset"))
            snprintf(v1, sizeof v1, "/sys/fs/cgroup/cpuset%s/cpuset.effective_cpus", c2 + 1);
    }
    fclose(f);
    int n = 0;
    const char *paths[2] = {v2, v1};
    for (int i = 0; i < 2 && !n; i++) {
        if (!paths[i][0] || !(f = fopen(paths[i], "r"))) continue;
        if (fgets(line, sizeof line, f)) n = count_list(line);
        fclose(f);
    }
    return n;
}

/* The mask as a list ("0-1", "3", "0,2,4-5") into buf. */
static void mask_str(const cpu_set_t *set, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE && len + 16 < cap; c++) {
        if (!CPU_ISSET(c, set)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
        len += (size_t)snprintf(buf + len, cap - len, len ? ",%d" : "%d", c);
        if (e > c) len += (size_t)snprintf(buf + len, cap - len, "-%d", e);
        c = e;
    }
}

void qs_cpu_threads_probe(qs_cpu_threads *t)
{
    memset(t, 0, sizeof *t);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        t->affinity = CPU_COUNT(&set);
        mask_str(&set, t->cpus, sizeof t->cpus);
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (t->affinity <= 0) t->affinity = online > 0 ? (int)online : 1;
    int cg = cgroup_cpus();
    t->available = online > 0 ? (int)online : t->affinity;
    if (cg > 0 && cg < t->available) t->available = cg;
    if (t->available < t->affinity) t->available = t->affinity;
    t->threads = t->affinity;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (end != env && v >= 1 && v < t->threads) t->threads = (int)v;
    }
}

void qs_cpu_threads_init(qs_cpu_threads *t)
{
    qs_cpu_threads_probe(t);
    omp_set_num_threads(t->threads);
    openblas_set_num_threads(t->threads);
}

void qs_cpu_threads_share(qs_cpu_threads *t, int ranks)
{
    int share = ranks > 0 ? t->available / ranks : t->available;
    if (share < 1) share = 1;
    if (t->affinity > share && t->threads > share) t->threads = share;
    omp_set_num_threads(t->threads);
    openblas_set_num_threads(t->threads);
}
