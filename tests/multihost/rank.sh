#!/bin/sh
# rank.sh DIR COMMAND... — runs one MPI rank of the multi-host test and keeps
# what the test checks per rank: its stderr (DIR/rankR.err) and its exit code
# with the time it exited (DIR/rankR.rc: "CODE SECONDS-SINCE-EPOCH"). TERM is
# ignored by this shell so that the record is written even while mpirun tears
# the job down (qshard installs its own TERM handler).
d=$1
shift
r=${OMPI_COMM_WORLD_RANK:-x}
trap '' TERM
"$@" 2>"$d/rank$r.err"
rc=$?
echo "$rc $(date +%s.%N)" >"$d/rank$r.rc"
exit $rc
