"""Hosts made of network namespaces, for multi-host tests on one machine.

`Cluster(n)` makes a head namespace (where mpirun runs, like a login node)
and n host namespaces, each with its own address on a private /24 behind a
bridge in the root namespace (veth pairs; the root namespace itself gets no
address, so nothing of the machine's own network changes). Open MPI starts
its daemons on the hosts through tests/multihost/ns_agent.sh, which enters a
host's namespace (and a UTS namespace with the host's name) instead of
logging in with ssh; its TCP traffic is pinned to the private subnet.

Failures to inject: `kill_host(k)` (every process in the namespace, SIGKILL:
a crash or the OOM killer), `link_down(k)` / `link_up(k)` (the host's cable:
its packets vanish without a reset, like a power loss).

Everything is named qsmh<pid>...; `cleanup()` removes it (also on failure:
use the context manager), and `reap_stale()` removes what a killed earlier
run left (its pid is gone). Needs root, iproute2 (`ip`) and util-linux
(`unshare`); `why_not()` says what is missing.
"""
import os
import re
import shutil
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "ns_agent.sh")
RANK = os.path.join(HERE, "rank.sh")
PREFIX = "qsmh"


def sh(*args, check=True, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def why_not():
    """None when namespaces can be made here, else the reason (for a skip)."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN"
    for tool in ("ip", "unshare", "mpirun"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed (scripts/install_deps.sh installs iproute2 and openmpi-bin)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    p = sh("ip", "netns", "add", probe, check=False)
    if p.returncode != 0:
        return f"cannot make a network namespace: {p.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def reap_stale():
    """Removes namespaces and links of earlier runs whose process is gone
    (a run killed by a timeout cannot clean up after itself)."""
    names = sh("ip", "netns", "list", check=False).stdout.split()
    links = [line.split(":")[1].strip().split("@")[0]
             for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines() if line.count(":") >= 2]
    stale = set()
    for n in names + links:
        m = re.match(rf"{PREFIX}(\d+)", n)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            stale.add(m.group(1))
    for pid in stale:
        Cluster.remove_all(f"{PREFIX}{pid}")


class Cluster:
    def __init__(self, n_hosts, tmp):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.n = n_hosts
        self.tmp = tmp
        self.subnet = self._free_subnet()
        self.head = f"{self.tag}-h0"
        self.hosts = [f"{self.tag}-h{k}" for k in range(1, n_hosts + 1)]
        self.names = [f"node{k}" for k in range(1, n_hosts + 1)]
        self.addrs = [f"{self.subnet}.{k}" for k in range(1, n_hosts + 1)]
        self.map_file = os.path.join(tmp, "hosts.map")
        self.made = False

    # ---- set-up and clean-up ------------------------------------------------------------
    def _free_subnet(self):
        # the subnet exists only inside this cluster's namespaces and bridge
        # (the root namespace gets no address): any two clusters may share it
        k = os.getpid() % 5000
        return f"10.{231 + k // 250}.{k % 250}"

    def __enter__(self):
        self.make()
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def _veth(self, k):
        return f"{self.tag}v{k}"  # root-namespace end of host k's cable (k = 0: the head)

    def make(self):
        self.made = True
        br = f"{self.tag}br"
        sh("ip", "link", "add", br, "type", "bridge")
        sh("ip", "link", "set", br, "up")
        for k, ns in enumerate([self.head] + self.hosts):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", self._veth(k), "type", "veth", "peer", "name", f"{self.tag}p{k}")
            sh("ip", "link", "set", f"{self.tag}p{k}", "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{self.tag}p{k}", "name", "eth0")
            addr = f"{self.subnet}.{100 if k == 0 else k}/24"
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "set", self._veth(k), "master", br)
            sh("ip", "link", "set", self._veth(k), "up")
        # mpirun's host: give up on a daemon whose host vanished after 3
        # retransmissions (seconds), not Linux's default 15 (about 15 minutes)
        sh("ip", "netns", "exec", self.head, "sysctl", "-q", "-w", "net.ipv4.tcp_retries2=3")
        with open(self.map_file, "w") as f:
            for addr, ns, name in zip(self.addrs, self.hosts, self.names):
                f.write(f"{addr} {ns} {name}\n")

    @staticmethod
    def remove_all(tag):
        for ns in sh("ip", "netns", "list", check=False).stdout.split():
            if ns.startswith(tag + "-"):
                for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), 9)
                    except (ProcessLookupError, ValueError):
                        pass
                sh("ip", "netns", "del", ns, check=False)
        for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(tag) and (name.startswith(tag + "v") or name.startswith(tag + "br")):
                sh("ip", "link", "del", name, check=False)

    def cleanup(self):
        if self.made:
            Cluster.remove_all(self.tag)
            self.made = False

    # ---- checks and failures ---------------------------------------------------------------
    def can_talk(self, a=0, b=1):
        """True when host a reaches host b over TCP (a bridge that does not
        forward, e.g. under br_netfilter with a DROP policy, fails here)."""
        port = 40000 + (os.getpid() + 97 * b) % 20000
        srv = subprocess.Popen(["ip", "netns", "exec", self.hosts[b], "python3", "-c",
                                "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                                f"s.bind(('0.0.0.0', {port})); s.listen(1); s.settimeout(10); c,_=s.accept(); c.send(b'ok')"])
        try:
            for _ in range(50):
                p = sh("ip", "netns", "exec", self.hosts[a], "python3", "-c",
                       f"import socket; s=socket.create_connection(('{self.addrs[b]}', {port}), 1); print(s.recv(2).decode())",
                       check=False)
                if p.stdout.strip() == "ok":
                    return True
                time.sleep(0.1)
            return False
        finally:
            srv.kill()
            srv.wait()

    def pids(self, k):
        return [int(p) for p in sh("ip", "netns", "pids", self.hosts[k], check=False).stdout.split()]

    def kill_host(self, k):
        for pid in self.pids(k):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        # gone before anything restarts there (a dying daemon still holds its ports)
        for _ in range(100):
            if not self.pids(k):
                break
            time.sleep(0.05)

    def link_down(self, k):
        sh("ip", "link", "set", self._veth(k + 1), "down")

    def link_up(self, k):
        """The link back, and usable: while it was down the other hosts' ARP
        entries for host k went FAILED, and a connect() to it then fails at
        once until they are re-resolved (Open MPI's daemons gave up on it in 1
        of 3 resumes); flush them and wait until every host reaches host k."""
        sh("ip", "link", "set", self._veth(k + 1), "up")
        for ns in self.hosts:
            sh("ip", "-n", ns, "neigh", "flush", "all", check=False)
        for j in range(len(self.hosts)):
            if j != k and not self.can_talk(j, k):
                raise AssertionError(f"host {j} does not reach host {k} after its link came back")

    # ---- mpirun ----------------------------------------------------------------------------
    def mpirun(self, n_ranks, argv, rank_dir, env_extra=None):
        """The command line that runs argv on the first n_ranks hosts, one rank
        each, every rank through rank.sh (its stderr and exit code kept in
        rank_dir). Run it with subprocess; mpirun itself runs in the head."""
        hostfile = os.path.join(self.tmp, f"hostfile{n_ranks}")
        with open(hostfile, "w") as f:
            for addr in self.addrs[:n_ranks]:
                f.write(f"{addr} slots=1\n")
        net = f"{self.subnet}.0/24"
        env = {"QS_MH_HOSTS": self.map_file, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env.update(env_extra or {})
        cmd = ["ip", "netns", "exec", self.head, "env"] + [f"{k}={v}" for k, v in env.items()]
        cmd += ["mpirun", "--allow-run-as-root", "--hostfile", hostfile, "-np", str(n_ranks), "--map-by", "node",
                "--mca", "plm_rsh_agent", AGENT, "--mca", "plm_rsh_no_tree_spawn", "1",
                "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", net, "--mca", "oob_tcp_if_include", net]
        for k in env:
            cmd += ["-x", k]
        return cmd + [RANK, rank_dir] + [str(a) for a in argv]

