# Sourced by the scripts: environment for building and running qshard here.
# Open MPI refuses to run as root unless told; CI and containers are root.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# More ranks than cores on a laptop or CI box is fine for tests.
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
# OpenMP threads that spin while idle fight OpenBLAS's threads for the cores
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
