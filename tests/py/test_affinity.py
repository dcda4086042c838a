"""Every core a rank is given, used — and launch lines that give ranks their cores.

Under real mpirun (Open MPI), on this machine's cores:
- a rank bound to fewer cores than its share of the node (Open MPI's default
  binds one rank to ONE core) prints that at the start and one warning line
  naming the flags that fix it;
- every mpirun launch line in README.md, jobs/*.ini and slurm/qshard.sbatch
  binds with `--map-by ppr:R:node:pe=C` or `--bind-to none`, and the srun
  lines of the sbatch template pass --cpus-per-task;
- each binding form, launched here (R ranks × C cores filling the node, and
  unbound), gives each rank the cores the form says — read independently
  with Python's os.sched_getaffinity under the same flags — and qshard reports
  that many cores, one thread per core of its share, and no warning.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import qstest  # noqa: E402

np = qstest.need("numpy")
cores = len(os.sched_getaffinity(0))
if cores < 2:
    qstest.skip(f"this process may run on {cores} core: a rank cannot get fewer than its share")
MPIEXEC = os.environ.get("QS_MPIEXEC", "mpirun")
tmp = qstest.tmpdir()
env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
# ranks <= cores must not be called "oversubscribed" here (that would unbind them)
env.pop("OMPI_MCA_rmaps_base_oversubscribe", None)

model = os.path.join(tmp, "m")
qstest.run(["synth", "--arch", "llama", "--layers", 2, "--hidden", 64, "--heads", 4, "--vocab", 128, "--seed", 1,
            "--out", model])
calib = os.path.join(tmp, "calib.npy")
np.save(calib, np.random.default_rng(0).integers(0, 128, size=(4, 16), dtype=np.int32))
n_runs = 0


def qshard_run(flags):
    """qshard run under mpirun with `flags`; returns {rank: (cores, threads)} and its output (progress on stdout, warnings on stderr)."""
    global n_runs
    n_runs += 1
    w, o = os.path.join(tmp, f"w{n_runs}"), os.path.join(tmp, f"o{n_runs}")
    cmd = [MPIEXEC, *flags, qstest.qshard(), "run", "--model", model, "--calib", calib, "--work", w, "--out", o,
           "--group-size", "32"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    qstest.check(p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr}")
    ranks = {}
    for m in re.finditer(r"rank (\d+): blocks .*?; (\d+) cores?, (\d+) threads?", p.stdout + p.stderr):
        ranks[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return ranks, p.stdout + p.stderr


def affinity(flags):
    """Each rank's CPU count under mpirun `flags`, read by Python, not by qshard."""
    cmd = [MPIEXEC, *flags, sys.executable, "-c",
           "import os; print(os.environ.get('OMPI_COMM_WORLD_RANK'), len(os.sched_getaffinity(0)))"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    qstest.check(p.returncode == 0, f"{' '.join(cmd)}: {p.stderr}")
    return {int(r): int(n) for r, n in (l.split() for l in p.stdout.splitlines() if l.strip())}


# --- the default binding: one core for one rank, and the warning -------------------------
ranks, log = qshard_run(["-np", "1"])
qstest.check(affinity(["-np", "1"]) == {0: 1}, "Open MPI binds a single rank to one core by default")
qstest.check(ranks == {0: (1, 1)}, f"default binding: expected 1 core, 1 thread: {ranks}\n{log}")
warn = [l for l in log.splitlines() if "warning" in l]
qstest.check(len(warn) == 1 and "rank 0" in warn[0] and f"--map-by ppr:1:node:pe={cores}" in warn[0]
             and "--bind-to none" in warn[0] and f"--cpus-per-task={cores}" in warn[0],
             f"one warning line naming the flags: {warn}")
print(f"default mpirun -np 1: 1 core of {cores}, warned: {warn[0]}")

# --- the launch lines of the docs -----------------------------------------------------------
src = qstest.source()
texts = {"README.md": open(os.path.join(src, "README.md")).read(),
         "slurm/qshard.sbatch": open(os.path.join(src, "slurm", "qshard.sbatch")).read()}
for f in sorted(os.listdir(os.path.join(src, "jobs"))):
    if f.endswith(".ini"):
        texts[f"jobs/{f}"] = open(os.path.join(src, "jobs", f)).read()
forms = set()
n_lines = n_srun = 0
for name, text in texts.items():
    for line in text.splitlines():
        # `mpirun FLAGS qshard ...` (flags: -x or --xx, each with at most one value), and the
        # sbatch template's LAUNCH=(mpirun FLAGS)
        pat = r"\bmpirun((?:\s+--?[\w-]+(?:[ =](?!-)[^\s`]+)?)*)\s+(?:qshard\b|\"\$QSHARD)|LAUNCH=\(mpirun([^)\n]*)\)"
        for m in re.finditer(pat, line):
            flags = m.group(1) if m.group(1) is not None else m.group(2)
            if "--oversubscribe" in flags or "-np P" in flags:
                continue  # test and synopsis lines
            n_lines += 1
            ppr = re.search(r"--map-by ppr:(\S+?):node:pe=(\S+)", flags)
            unbound = "--bind-to none" in flags
            qstest.check(ppr or unbound, f"{name}: `mpirun{flags}` does not bind ranks to their cores "
                         "(--map-by ppr:R:node:pe=C or --bind-to none)")
            forms.add("ppr" if ppr else "none")
        for m in re.finditer(r"LAUNCH=\((srun [^)\n]*)\)", line):
            n_srun += 1
            qstest.check("--cpus-per-task" in m.group(1), f"{name}: `{m.group(1)}` without --cpus-per-task")
qstest.check(n_lines >= 4 and forms == {"ppr", "none"} and n_srun >= 2,
             f"launch lines found: {n_lines} mpirun (forms {forms}), {n_srun} srun")

# --- each form, run here: ranks get the cores it says, qshard uses them, no warning ----------
cases = [(["-np", "1", "--map-by", f"ppr:1:node:pe={cores}"], {0: cores}, cores),
         (["-np", str(cores), "--map-by", f"ppr:{cores}:node:pe=1"], {r: 1 for r in range(cores)}, 1),
         (["-np", "1", "--bind-to", "none"], {0: cores}, cores),
         (["-np", "2", "--bind-to", "none"], {0: cores, 1: cores}, cores // 2)]
for flags, want, threads in cases:
    got = affinity(flags)
    qstest.check(got == want, f"mpirun {' '.join(flags)}: ranks' CPUs {got}, expected {want}")
    ranks, log = qshard_run(flags)
    qstest.check(ranks == {r: (n, threads) for r, n in want.items()},
                 f"mpirun {' '.join(flags)}: qshard reports {ranks}, expected cores {want} with {threads} threads\n{log}")
    qstest.check("warning" not in log, f"mpirun {' '.join(flags)}: unexpected warning\n{log}")
    print(f"mpirun {' '.join(flags)}: cores per rank {got}, {threads} thread(s) each, no warning")
print("ok")
