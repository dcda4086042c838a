#!/bin/sh
# ns_agent.sh — Open MPI's remote launcher for the multi-host test harness:
# mpirun calls it as it would call ssh (`ns_agent.sh [options] HOST COMMAND...`);
# instead of logging in, it enters HOST's network namespace (and a UTS
# namespace with the host's own name) and runs COMMAND there with sh -c.
# QS_MH_HOSTS names a file of "ADDRESS NAMESPACE HOSTNAME" lines.
set -eu
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;   # ssh-style options mpirun may pass (-x, -T, ...)
    *) break ;;
  esac
done
host=$1
shift
map=${QS_MH_HOSTS:?QS_MH_HOSTS is not set}
line=$(awk -v h="$host" '$1 == h || $3 == h { print; exit }' "$map")
[ -n "$line" ] || { echo "ns_agent.sh: unknown host $host (not in $map)" >&2; exit 255; }
ns=$(echo "$line" | awk '{ print $2 }')
name=$(echo "$line" | awk '{ print $3 }')
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1"; shift; exec sh -c "$*"' ns_agent "$name" "$@"
