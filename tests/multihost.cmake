# Real multi-host runs: hosts made of network namespaces, Open MPI over TCP
# between them (tests/multihost/). Needs root and iproute2; skips (77) otherwise.
# About 30-60 s: 2-host exports vs one host; a host killed and a host's link
# cut mid-run (the other ranks exit within the bound, code 3, one line each),
# each resumed to byte-identical exports.
qs_add_py_test(multihost tests/py/test_multihost.py LABELS multihost TIMEOUT 300)
# The heartbeat on one host (no root): a rank stopped with SIGSTOP is lost after
# --heartbeat-timeout, a killed rank at once; the others exit 3, one line each; resumed.
qs_add_py_test(heartbeat tests/py/test_heartbeat.py LABELS mpi TIMEOUT 300)
