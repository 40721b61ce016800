#!/usr/bin/env python3
"""The benchmark harness (`make bench`): starts the pieces as separate
processes on loopback from the release binary and reports throughput, CPU
time (from /proc) and peak memory per process, as ratios where a comparison
is meant. Results go to stdout and target/bench/results.json; BENCHMARKS.md
records them with the machine they came from.

usage: hack/bench.py [capacity|fanout|churn|controller|profile-path|redline|storm|burst|pod-storm|pod-orphans|verdicts|versions|mock-peer|proxy|policy-names ...] [--streams N] [--seconds S]

`mock-peer` runs linkerd2-mock-dst (2020) beside our mock-dst (hack/build-deps.sh mock_dst_2020 builds it).
`proxy` runs Linkerd's proxy (hack/build-deps.sh linkerd_proxy) against our mock-dst in a network
namespace of its own (unshare --net, ip, iptables; root).

`controller`, `profile-path`, `redline`, `storm`, `pod-storm` and `pod-orphans` run against Linkerd's real destination controller
on the local control plane (hack/local-cluster.sh), brought up if it is down;
`versions` against each version's own (hack/local-cluster.sh --name NAME up --linkerd VERSION).
`policy-names` runs Linkerd's policy controller (hack/build-deps.sh linkerd_policy_controller) against
the local control plane's apiserver, with examples/policy_names.rs asking it.
"""
import argparse
import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("DST_LOAD_BIN", os.path.join(REPO, "target/release/dst-load-controller"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Pid:
    """CPU time and memory of a process, read from /proc (also for one this
    harness did not start: the destination controller)."""

    def __init__(self, pid):
        self.pid = pid

    def cpu(self):
        """User + system CPU seconds so far."""
        fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def cpu_threads(self):
        """CPU seconds of the threads alive now, to the nanosecond (the
        first field of /proc/PID/task/*/schedstat): for figures below what
        clock ticks resolve. Threads that have exited are not counted."""
        total = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                total += int(open(f"/proc/{self.pid}/task/{task}/schedstat").read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total / 1e9

    def mem(self):
        """(resident now, peak resident) in bytes."""
        status = open(f"/proc/{self.pid}/status").read()
        def kb(key):
            return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) * 1024
        return kb("VmRSS"), kb("VmHWM")


# Every child still running; stop_all() ends them on every exit path.
LIVE = []


def stop_all():
    for p in list(LIVE):
        p.stop()


class Proc(Pid):
    """A child process of the harness, logging to target/bench/NAME.log."""

    def __init__(self, name, args, env=None, exe=BIN, stdout_to_log=False):
        self.name = name
        self.log = open(os.path.join(REPO, f"target/bench/{name}.log"), "w")
        stdout = self.log if stdout_to_log else subprocess.PIPE
        self.p = subprocess.Popen([exe, *args], stdout=stdout, stderr=self.log,
                                  env=dict(os.environ, **(env or {})), text=True)
        LIVE.append(self)
        super().__init__(self.p.pid)

    def stop(self):
        """Terminates the process (if still running); returns its stdout."""
        if self in LIVE:
            LIVE.remove(self)
        if self.p.poll() is None:
            self.p.terminate()
            try:
                out, _ = self.p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                out, _ = self.p.communicate()
            return out
        if self.p.stdout and not self.p.stdout.closed:
            return self.p.stdout.read()
        return ""

    def wait(self, timeout):
        """Waits for the process to end by itself; returns its stdout."""
        out, _ = self.p.communicate(timeout=timeout)
        if self in LIVE:
            LIVE.remove(self)
        return out


def by_label(port, name, label):
    """{label value: sample} of one labelled family."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(rf'{name}{{.*{label}="([^"]*)".*}} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def scrape(port):
    return scrape_url(f"http://127.0.0.1:{port}/metrics")


def wait_for(what, f, timeout):
    deadline = time.time() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.time() > deadline:
            sys.exit(f"bench: timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def metric_or_zero(port, name):
    try:
        return scrape(port).get(name, 0.0)
    except OSError:
        return 0.0


def mock(name, generate, extra=()):
    port, admin = free_port(), free_port()
    args = ["mock-dst", "--addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}",
            "--log-level", "warn", *extra]
    for g in generate:
        args += ["--generate", g]
    p = Proc(name, args)
    wait_for("mock-dst admin", lambda: _up(admin), 30)
    return p, port, admin


def _up(port):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=2)
        return True
    except OSError:
        return False


def client(name, dst_port, services, streams_per_service, connections, extra=()):
    admin = free_port()
    targets = f"svc-{{0..{services - 1}}}.bench.svc.cluster.local:8080"
    p = Proc(name, ["client", "--destination-addr", f"127.0.0.1:{dst_port}", "--admin-addr",
                    f"127.0.0.1:{admin}", "--target-services", targets, "--streams-per-service",
                    str(streams_per_service), "--connections", str(connections),
                    "--log-level", "warn", "--backoff-max", "5s", *extra])
    return p, admin


def svc(i):
    return f"svc-{i}.bench.svc.cluster.local:8080"


def cidr(i):
    return f"10.{i // 256}.{i % 256}.0/24"


def bench_capacity(a):
    """One client process holding many streams (10 endpoints each)."""
    services = 100
    per_service = a.streams // services
    streams = per_service * services
    connections = max(1000, streams // 100)
    m, port, madmin = mock("capacity-mock", [f"{svc(i)}={cidr(i)}:10" for i in range(services)])
    c, cadmin = client("capacity-client", port, services, per_service, connections)
    t0 = time.time()
    wait_for(f"{streams} streams with their first update",
             lambda: metric_or_zero(cadmin, "destination_client_time_to_first_update_seconds_count") >= streams,
             a.timeout)
    ready = time.time() - t0
    time.sleep(5)  # settle: allocator, late buffers
    m_rss, m_hwm = m.mem()
    c_rss, c_hwm = c.mem()
    active = scrape(cadmin)["destination_client_streams_active"]
    result = {
        "streams": streams, "connections": connections, "endpoints_per_set": 10,
        "streams_active": active, "seconds_to_all_answered": round(ready, 1),
        "client_rss_bytes": c_rss, "client_peak_rss_bytes": c_hwm,
        "client_bytes_per_stream": round(c_rss / streams),
        "client_cpu_seconds": round(c.cpu(), 1),
        "mock_rss_bytes": m_rss, "mock_peak_rss_bytes": m_hwm, "mock_cpu_seconds": round(m.cpu(), 1),
    }
    c.stop()
    m.stop()
    return result


def bench_fanout(a):
    """The mock oscillating endpoint sets to many streams: endpoint updates
    delivered per CPU-second, on the mock's side and on the client's."""
    services, per_service = 10, a.fanout_streams // 10
    gen = [f"{svc(i)}={cidr(i)}:{a.min_endpoints}..{a.max_endpoints}" for i in range(services)]
    m, port, madmin = mock("fanout-mock", gen, ["--oscillate-hold-duration", a.hold,
                                                 "--stream-queue-capacity", "10000"])
    c, cadmin = client("fanout-client", port, services, per_service, a.connections)
    wait_for("every stream answered",
             lambda: metric_or_zero(cadmin, "destination_client_time_to_first_update_seconds_count")
             >= services * per_service, a.timeout)
    time.sleep(3)
    s0, r0 = scrape(madmin), scrape(cadmin)
    mc0, cc0, t0 = m.cpu(), c.cpu(), time.time()
    time.sleep(a.seconds)
    s1, r1 = scrape(madmin), scrape(cadmin)
    mc1, cc1, t1 = m.cpu(), c.cpu(), time.time()
    sent = s1["mock_dst_endpoints_sent_total"] - s0["mock_dst_endpoints_sent_total"]
    updates = s1["mock_dst_updates_sent_total"] - s0["mock_dst_updates_sent_total"]
    received = (r1["destination_client_updates_received_total"]
                - r0["destination_client_updates_received_total"])
    # Counted where they arrive: what entered a stream's queue but was not
    # yet read would inflate both figures when the client trails.
    delivered = (r1["destination_client_endpoint_updates_received_total"]
                 - r0["destination_client_endpoint_updates_received_total"])
    mock_cpu, client_cpu, wall = mc1 - mc0, cc1 - cc0, t1 - t0
    result = {
        "streams": services * per_service, "connections": a.connections,
        "endpoints": f"{a.min_endpoints}..{a.max_endpoints}", "hold": a.hold,
        "seconds": round(wall, 1),
        "endpoint_updates_sent": int(sent), "endpoint_updates_received": int(delivered),
        "messages_sent": int(updates), "messages_received": int(received),
        "overflows": s1.get("mock_dst_queue_overflows_total", 0),
        "endpoint_updates_received_per_second": round(delivered / wall),
        "mock_cpu_seconds": round(mock_cpu, 2), "client_cpu_seconds": round(client_cpu, 2),
        "mock_endpoint_updates_per_cpu_second": round(delivered / mock_cpu) if mock_cpu else None,
        "client_endpoint_updates_per_cpu_second": round(delivered / client_cpu) if client_cpu else None,
        "client_cpu_per_mock_cpu": round(client_cpu / mock_cpu, 3) if mock_cpu else None,
        "mock_peak_rss_bytes": m.mem()[1], "client_peak_rss_bytes": c.mem()[1],
    }
    c.stop()
    m.stop()
    return result


def peer_bin(component, version_key, exe):
    """A peer as hack/build-deps.sh caches it by version (built here if missing)."""
    env = dict(line.strip().split("=", 1) for line in open(os.path.join(REPO, "hack/versions.env"))
               if "=" in line and not line.startswith("#"))
    cache = os.environ.get("DST_LOAD_CACHE", os.path.expanduser("~/.cache/dst-load-controller"))
    path = os.path.join(cache, f"{component}-{env[version_key]}", "bin", exe)
    if not os.path.exists(path):
        subprocess.run([os.path.join(REPO, "hack/build-deps.sh"), component], check=True)
    return path


def mock_2020_bin():
    """linkerd2-mock-dst (2020)."""
    return peer_bin("mock_dst_2020", "MOCK_DST_2020_COMMIT", "linkerd2-mock-dst")


def peer_sets(i, lo, hi):
    """Service i's two endpoint sets: the first lo of its hi addresses, and all hi."""
    every = [f"10.{100 + i}.{j // 256}.{j % 256}:8080" for j in range(hi)]
    return every[:lo], every


def peer_cell(a, which, streams):
    """One server (`ours` or `2020`) under `streams` streams over 10
    services, each service flipping between its two sets every --hold: the
    client's endpoint updates per CPU-second of the server."""
    services, per_service = 10, streams // 10
    sets = [peer_sets(i, a.min_endpoints, a.max_endpoints) for i in range(services)]
    port = free_port()
    if which == "ours":
        admin = free_port()
        server = Proc(f"peer-{which}-{streams}", [
            "mock-dst", "--addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}",
            "--log-level", "warn", "--stream-queue-capacity", "10000",
            *(["--bare-endpoints"] if a.peer_metadata == "bare" else [])])
        wait_for("mock-dst admin", lambda: _up(admin), 30)

        def put(i, endpoints):
            send_json("PUT", f"http://127.0.0.1:{admin}/api/destinations/{svc(i)}",
                      {"endpoints": endpoints})
    else:
        folder = os.path.join(REPO, f"target/bench/peer-2020-{streams}-endpoints")
        os.makedirs(folder, exist_ok=True)
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))

        def put(i, endpoints):
            # One write of the whole file: the 2020 mock re-reads it on
            # each inotify MODIFY (the truncation's too, which it logs
            # as a parse error and skips).
            # Each address as our mock shapes it (its pod's labels, a TLS
            # identity, the HTTP/2 hint), so both send the same content
            # (the 2020 mock adds `addr` and `h2` labels of its own).
            name = f"svc-{i}"
            if a.peer_metadata == "bare":
                body = json.dumps([{"address": e, "h2": False, "weight": 10000, "metric_labels": {},
                                    "tls_identity": None, "authority_override": None}
                                   for e in endpoints]).encode()
            body = body if a.peer_metadata == "bare" else json.dumps([{
                "address": e, "h2": True, "weight": 10000,
                "metric_labels": {"pod": f"{name}-{e.split(':')[0].replace('.', '-')}",
                                  "deployment": name, "serviceaccount": "default"},
                "tls_identity": "default.bench.serviceaccount.identity.linkerd.cluster.local",
                "authority_override": None} for e in endpoints]).encode()
            fd = os.open(os.path.join(folder, f"{svc(i)}.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, body)
            os.close(fd)
        server = Proc(f"peer-{which}-{streams}",
                      ["--addr", f"127.0.0.1:{port}", "--endpoints-dir", folder],
                      env={"RUST_LOG": "error"}, exe=mock_2020_bin())
        time.sleep(1)
    for i in range(services):
        put(i, sets[i][0])
    c, cadmin = client(f"peer-{which}-{streams}-client", port, services, per_service, a.connections)
    wait_for(f"{streams} streams answered",
             lambda: metric_or_zero(cadmin, "destination_client_time_to_first_update_seconds_count") >= streams,
             a.timeout)
    time.sleep(3)
    hold = float(a.hold.rstrip("s"))
    stop = threading.Event()
    changes = [0]

    def drive():
        big = [False] * services
        while not stop.is_set():
            for i in range(services):
                big[i] = not big[i]
                put(i, sets[i][1] if big[i] else sets[i][0])
                changes[0] += 1
            stop.wait(hold)
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    time.sleep(2 * hold)  # past the first round
    r0, sc0, cc0, t0, ch0 = scrape(cadmin), server.cpu(), c.cpu(), time.time(), changes[0]
    lo0 = loopback_bytes()
    time.sleep(a.seconds)
    r1, sc1, cc1, t1, ch1 = scrape(cadmin), server.cpu(), c.cpu(), time.time(), changes[0]
    lo1 = loopback_bytes()
    stop.set()
    driver.join()
    received = (r1["destination_client_endpoint_updates_received_total"]
                - r0["destination_client_endpoint_updates_received_total"])
    server_cpu, wall = sc1 - sc0, t1 - t0
    moved = (a.max_endpoints - a.min_endpoints) * per_service * (ch1 - ch0)
    result = {
        "server": which, "streams": streams, "connections": a.connections, "metadata": a.peer_metadata,
        "endpoints": f"{a.min_endpoints}<->{a.max_endpoints}", "hold": a.hold, "seconds": round(wall, 1),
        "changes": ch1 - ch0, "endpoint_updates_made": moved,
        "endpoint_updates_received": int(received),
        "server_cpu_seconds": round(server_cpu, 2), "client_cpu_seconds": round(cc1 - cc0, 2),
        "endpoint_updates_per_server_cpu_second": round(received / server_cpu) if server_cpu else None,
        "server_peak_rss_bytes": server.mem()[1],
        # Everything the loopback device carried in the window (both
        # directions, the changes too), per endpoint update received.
        "loopback_bytes_per_endpoint_update": round((lo1 - lo0) / received, 1) if received else None,
    }
    c.stop()
    server.stop()
    return result


def loopback_bytes():
    """Bytes the loopback device has carried (/proc/net/dev)."""
    for line in open("/proc/net/dev"):
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


def bench_mock_peer(a):
    """Our mock-dst against linkerd2-mock-dst (2020), on the same streams
    and the same changes: endpoint updates received at the client per
    CPU-second of the server, at each --peer-streams size."""
    out = {}
    for streams in (int(n) for n in a.peer_streams.split(",")):
        cells = {which: peer_cell(a, which, streams) for which in ("ours", "2020")}
        ours, old = (cells[w]["endpoint_updates_per_server_cpu_second"] for w in ("ours", "2020"))
        out[str(streams)] = {**cells, "ratio": round(ours / old, 1) if ours and old else None}
    return out


def policy_controller_bin(env):
    """Linkerd's policy controller of the local control plane's version."""
    built = env.get("DST_LOCAL_LINKERD_POLICY_CONTROLLER", "")
    if built and os.path.exists(built):
        return built
    return peer_bin("linkerd_policy_controller", "LINKERD_VERSION", "linkerd-policy-controller")


def bench_policy_names(a):
    """Linkerd's policy controller (built from its source, the chart's
    flags, against the local apiserver) asked the outbound policy of
    --policy-names service names, each once and none a Service
    (examples/policy_names.rs): its memory as the names grow, and its CPU
    for --policy-events Services created and deleted before and after."""
    env, started = local_cluster()
    controller = policy_controller_bin(env)
    kubectl = [env["DST_LOCAL_KUBECTL"], "--kubeconfig", env["KUBECONFIG"]]
    ns = f"policy-names-{os.getpid()}"
    names = os.path.join(REPO, "target/release/examples/policy_names")
    if not os.path.exists(names):
        # Built with the dev-dependencies' features: cargo then builds the
        # library again (about 2 minutes), and again for the next --bin.
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "policy_names"],
                       cwd=REPO, check=True)
    run_ok(*kubectl, "create", "namespace", ns)
    # The controller takes the lease of the destination Deployment of the
    # control plane's namespace: one that runs nothing.
    run_ok(*kubectl, "-n", "linkerd", "create", "deployment", ns, "--image=none", "--replicas=0")
    try:
        port, admin = free_port(), free_port()
        ctl = Proc("policy-controller", [
            "--admission-controller-disabled", "--admin-addr", f"127.0.0.1:{admin}",
            "--grpc-addr", f"127.0.0.1:{port}", "--control-plane-namespace", "linkerd",
            "--policy-deployment-name", ns,
            "--cluster-networks", "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
            "--default-opaque-ports", "25,587,3306,4444,5432,6379,9300,11211",
            "--default-policy", "all-unauthenticated"],
            env={**env, "HOSTNAME": ns, "LINKERD_POLICY_CONTROLLER_LOG": "warn"},
            exe=controller)
        wait_for("the policy controller", lambda: _up(admin), 60)
        time.sleep(3)

        def events():
            """Controller CPU seconds for --policy-events Services created, then deleted."""
            cpu0 = ctl.cpu()
            for verb in ("create", "delete"):
                for j in range(a.policy_events):
                    args = ["service", "clusterip", f"ev-{j}", "--tcp=80"] if verb == "create" else \
                        ["service", f"ev-{j}", "--wait=false"]
                    run_ok(*kubectl, "-n", ns, verb, *args)
            time.sleep(3)
            return round(ctl.cpu() - cpu0, 2)

        first_rss = ctl.mem()[0]
        before = events()
        steps = []
        done = 0
        while done < a.policy_names:
            count = min(a.policy_names_step, a.policy_names - done)
            cpu0 = ctl.cpu()
            out = subprocess.run([names, "--addr", f"127.0.0.1:{port}", "--namespace", ns,
                                  "--from", str(done), "--count", str(count),
                                  *(["--watch"] if a.policy_names_watch else [])],
                                 check=True, capture_output=True, text=True)
            done += count
            steps.append({"names": done, "controller_rss_bytes": ctl.mem()[0],
                          "lookup_seconds": json.loads(out.stdout)["seconds"],
                          "controller_cpu_seconds": round(ctl.cpu() - cpu0, 2)})
        time.sleep(5)
        settled_rss = ctl.mem()[0]
        after = events()
        result = {
            "controller": controller, "lookups": "watch" if a.policy_names_watch else "get",
            "names": a.policy_names, "rss_bytes_at_start": first_rss, "steps": steps,
            "rss_bytes_5s_after": settled_rss,
            "rss_bytes_per_name": round((settled_rss - first_rss) / a.policy_names) if a.policy_names else None,
            "service_events": 2 * a.policy_events,
            "controller_cpu_seconds_per_service_event_before": round(before / (2 * a.policy_events), 4),
            "controller_cpu_seconds_per_service_event_after": round(after / (2 * a.policy_events), 4),
        }
        ctl.stop()
        return result
    finally:
        subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)
        subprocess.run([*kubectl, "-n", "linkerd", "delete", "deployment", ns, "--wait=false"],
                       capture_output=True)
        local_cluster_down(started)


PROXY_ID = "default.ns.serviceaccount.identity.linkerd.cluster.local"
PROXY_WEB = "web.ns.svc.cluster.local:8080"
PROXY_WEB_IP = "10.96.0.1"
PROXY_APP_IP = "10.77.0.100"


def run_ok(*argv):
    subprocess.run(argv, check=True, capture_output=True)


def backends_server(port, delay_ms=0):
    """One asyncio HTTP/1.1 server on every local address at `port`, each
    answering its own address (keep-alive) after `delay_ms`, in a thread
    of the harness."""
    import asyncio

    async def serve(reader, writer):
        me = writer.get_extra_info("sockname")[0].encode()
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(me), me)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        writer.close()

    def run():
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(serve, "0.0.0.0", port, backlog=4096))
        loop.run_until_complete(server.serve_forever())
    threading.Thread(target=run, daemon=True).start()


class ProxyRig:
    """mock-dst with Identity and Policy, Linkerd's proxy of it (started
    through proxy-env), iptables sending the application's connections to
    the service's address to the proxy: in the harness's own network
    namespace, with 10.77/16 (endpoints) and 10.96/16 (services) local."""

    def __init__(self, name, endpoints, new_connections=False):
        self.new_connections = new_connections
        folder = os.path.join(REPO, f"target/bench/{name}-id")
        os.makedirs(folder, exist_ok=True)
        token, anchors = os.path.join(folder, "token"), os.path.join(folder, "anchors.pem")
        open(token, "w").write("bench-token")
        if os.path.exists(anchors):
            os.remove(anchors)
        grpc, self.admin = free_port(), free_port()
        self.mock = Proc(f"{name}-mock", [
            "mock-dst", "--addr", f"127.0.0.1:{grpc}", "--admin-addr", f"127.0.0.1:{self.admin}",
            "--log-level", "warn", "--unmeshed-endpoints", "--identity-name", PROXY_ID,
            "--identity-token-file", token, "--identity-trust-anchors-out", anchors,
            "--service-address", f"{PROXY_WEB}={PROXY_WEB_IP}:80"])
        wait_for("mock-dst", lambda: _up(self.admin) and os.path.exists(anchors), 30)
        # Over the control API: 10,000 addresses do not fit in one argument.
        self.control("PUT", endpoints=endpoints)
        outbound, self.proxy_admin = free_port(), free_port()
        proxy = peer_bin("linkerd_proxy", "LINKERD_PROXY_VERSION", "linkerd2-proxy")
        script = 'out=$("$0" proxy-env "$@") || exit 3; eval "$out"; exec "$DST_LINKERD_PROXY"'
        self.proxy = Proc(f"{name}-proxy", [
            "-c", script, BIN, "--control-addr", f"127.0.0.1:{grpc}", "--identity-name", PROXY_ID,
            "--identity-token-file", token, "--identity-trust-anchors", anchors,
            "--identity-dir", os.path.join(folder, "proxy"),
            "--inbound-addr", f"127.0.0.1:{free_port()}", "--outbound-addr", f"127.0.0.1:{outbound}",
            "--proxy-admin-addr", f"127.0.0.1:{self.proxy_admin}",
            "--control-listen-addr", f"127.0.0.1:{free_port()}"],
            env={"DST_LINKERD_PROXY": proxy, "LINKERD2_PROXY_LOG": "warn"}, exe="/bin/sh",
            stdout_to_log=True)  # the proxy logs to stdout
        run_ok("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", PROXY_APP_IP, "-d",
               f"{PROXY_WEB_IP}/32", "-j", "REDIRECT", "--to-ports", str(outbound))

        def ready():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.proxy_admin}/ready", timeout=2).status == 200
            except OSError:
                return False
        wait_for("the proxy ready", ready, 60)
        self.conn = None

    def request(self):
        """One request through the proxy on a kept-alive connection: the
        address of the backend that answered (None: an error)."""
        import http.client
        for _ in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(PROXY_WEB_IP, 80, timeout=30,
                                                       source_address=(PROXY_APP_IP, 0))
            try:
                self.conn.request("GET", "/", headers={"host": "web"})
                rsp = self.conn.getresponse()
                body = rsp.read().decode()
                if self.new_connections:
                    self.conn.close()
                    self.conn = None
                return body if rsp.status == 200 else None
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return None

    def control(self, method, endpoints=None, add=(), remove=()):
        body = {"endpoints": endpoints} if method == "PUT" else {"add": list(add), "remove": list(remove)}
        send_json(method, f"http://127.0.0.1:{self.admin}/api/destinations/{PROXY_WEB}", body)

    def stop(self):
        self.proxy.stop()
        self.mock.stop()
        run_ok("iptables", "-t", "nat", "-F", "OUTPUT")


def netns_setup(a):
    """The namespace's loopback up, 10.77/16 and 10.96/16 local, and the
    backends answering on every such address at port 8080."""
    run_ok("ip", "link", "set", "lo", "up")
    for net in ("10.77.0.0/16", "10.96.0.0/16"):
        run_ok("ip", "route", "add", "local", net, "dev", "lo")
    backends_server(8080, a.proxy_backend_ms)


def send_json(method, url, body, timeout=30):
    """One JSON request to a control API (the mock's); its answer is read
    and dropped."""
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=timeout).read()


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def proxy_latency(a):
    """From a change (one endpoint swapped for another) to the first request
    the proxy routes to the new endpoint, requests back to back on one
    kept-alive connection."""
    one, two = "10.77.0.11:8080", "10.77.0.12:8080"
    rig = ProxyRig("proxy-latency", [one], a.proxy_new_connections)
    wait_for("a first answer", lambda: rig.request() == one.split(":")[0], 60)
    lags, stale = [], []
    for k in range(a.proxy_changes):
        new = two if k % 2 == 0 else one
        want = new.split(":")[0]
        t0 = time.monotonic()
        rig.control("PUT", endpoints=[new])
        old_answers = 0
        while True:
            got = rig.request()
            if got == want:
                break
            old_answers += 1
            if time.monotonic() - t0 > 60:
                sys.exit(f"bench: {want} never answered")
        lags.append(time.monotonic() - t0)
        stale.append(old_answers)
    # Then an endpoint added beside two that already serve: how long, and
    # how many requests, until it gets its first.
    rig.control("PUT", endpoints=[one, two])
    for _ in range(100):
        rig.request()
    added_lags, before = [], []
    for k in range(a.proxy_added):
        new = f"10.77.0.{50 + k % 100}:8080"
        want = new.split(":")[0]
        t0 = time.monotonic()
        rig.control("PATCH", add=[new])
        others = 0
        while rig.request() != want:
            others += 1
            if time.monotonic() - t0 > 120:
                sys.exit(f"bench: the added {want} never answered")
        added_lags.append(time.monotonic() - t0)
        before.append(others)
        rig.control("PATCH", remove=[new])
        for _ in range(20):
            rig.request()
    rig.stop()

    def spread(xs, scale=1.0, digits=2):
        if not xs:
            return None  # none timed (--proxy-added 0)
        return {q: round(pct(xs, v) * scale, digits) for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))} | {
            "max": round(max(xs) * scale, digits)}
    return {
        "changes": len(lags), "added": len(added_lags),
        "swap_first_request_to_new_endpoint_ms": spread(lags, 1000),
        "swap_requests_to_the_old_endpoint_after_the_change": spread(stale, 1, 0),
        "added_first_request_to_it_ms": spread(added_lags, 1000),
        "added_requests_to_the_others_first": spread(before, 1, 0),
    }


def proxy_cost_size(a, size):
    """The proxy's CPU per endpoint update and its memory with `size`
    endpoints, at each --proxy-rates changes per second (each change swaps
    one endpoint for a new one: two updates), a trickle of 10 requests a
    second keeping the service's discovery alive. CPU over the trickle alone
    (no changes) is subtracted. CPU is counted per thread to the nanosecond
    (schedstat), with the clock-tick figure beside it as a check."""
    addrs = [f"10.77.{1 + j // 250}.{1 + j % 250}:8080" for j in range(size)]
    spare = [f"10.77.{100 + j // 250}.{1 + j % 250}:8080" for j in range(10_000)]
    rig = ProxyRig(f"proxy-cost-{size}", addrs)
    wait_for("a first answer", lambda: rig.request() is not None, 60)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            rig.request()
            stop.wait(0.1)
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(5)
    cells = []
    for rate in [0, *(int(r) for r in a.proxy_rates.split(","))]:
        c0, n0, t0, made = rig.proxy.cpu(), rig.proxy.cpu_threads(), time.monotonic(), 0
        while time.monotonic() - t0 < a.seconds:
            if rate:
                old, new = addrs[made % size], spare[made % len(spare)]
                rig.control("PATCH", add=[new], remove=[old])
                addrs[made % size] = new
                spare[made % len(spare)] = old
                made += 1
                time.sleep(max(0.0, t0 + made / rate - time.monotonic()))
            else:
                time.sleep(0.5)
        cells.append({"changes_per_second": rate, "changes": made,
                      "cpu_seconds": rig.proxy.cpu_threads() - n0,
                      "cpu_seconds_ticks": rig.proxy.cpu() - c0,
                      "seconds": time.monotonic() - t0,
                      "rss_bytes": rig.proxy.mem()[0]})
    stop.set()
    t.join()
    base = cells[0]["cpu_seconds"] / cells[0]["seconds"]
    for cell in cells:
        extra = cell["cpu_seconds"] - base * cell["seconds"]
        cell["cpu_us_per_endpoint_update"] = (round(extra / (2 * cell["changes"]) * 1e6, 1)
                                              if cell["changes"] else None)
        cell["cpu_seconds"] = round(cell["cpu_seconds"], 4)
        cell["cpu_seconds_ticks"] = round(cell["cpu_seconds_ticks"], 2)
        cell["seconds"] = round(cell["seconds"], 1)
    result = {"endpoints": size, "peak_rss_bytes": rig.proxy.mem()[1], "cells": cells}
    rig.stop()
    return result


def bench_proxy(a):
    """Linkerd's proxy as the mock's client: change-to-routed latency, and
    its CPU per endpoint update and memory by endpoints per service. Runs
    in a network namespace of its own (unshare --net)."""
    if not os.environ.get("DST_BENCH_IN_NETNS"):
        out = os.path.join(REPO, "target/bench/proxy-netns.json")
        argv = [sys.executable, os.path.abspath(__file__), "proxy", "--seconds", str(a.seconds),
                "--proxy-changes", str(a.proxy_changes), "--proxy-added", str(a.proxy_added),
                "--proxy-sizes", a.proxy_sizes,
                "--proxy-rates", a.proxy_rates, "--proxy-backend-ms", str(a.proxy_backend_ms),
                *(["--proxy-new-connections"] if a.proxy_new_connections else [])]
        if os.path.exists(out):
            os.remove(out)
        done = subprocess.run(["unshare", "--net", "--", *argv],
                              env=dict(os.environ, DST_BENCH_IN_NETNS=out))
        if done.returncode and not os.path.exists(out):
            sys.exit("bench: the proxy benchmark failed before its first result")
        return json.load(open(out)) | ({"failed": done.returncode} if done.returncode else {})
    netns_setup(a)
    out = os.environ["DST_BENCH_IN_NETNS"]
    result = {"backend_ms": a.proxy_backend_ms, "new_connections": a.proxy_new_connections}
    # Written after each part: a later part's failure keeps the earlier ones.
    if a.proxy_changes:
        result["latency"] = proxy_latency(a)
        json.dump(result, open(out, "w"), indent=2)
    result["cost"] = []
    for size in (int(n) for n in a.proxy_sizes.split(",") if n):
        result["cost"].append(proxy_cost_size(a, size))
        json.dump(result, open(out, "w"), indent=2)
    return result


def bench_burst(a):
    """One change handed to many streams at once: the mock's own record of
    each delivery (from the change to the update handed to each stream's
    queue, GET /api/delivery) over --burst-changes changes to one destination
    watched by --burst-streams streams."""
    streams = a.burst_streams
    m, port, madmin = mock("burst-mock", [f"{svc(0)}={cidr(0)}:10..10"])
    c, cadmin = client("burst-client", port, 1, streams, min(streams, 10))
    wait_for("every stream answered",
             lambda: metric_or_zero(cadmin, "destination_client_time_to_first_update_seconds_count") >= streams,
             a.timeout)
    url = f"http://127.0.0.1:{madmin}/api/destinations/{svc(0)}"
    extra = "10.0.0.250:8080"
    for i in range(a.burst_changes):
        body = {"add": [extra]} if i % 2 == 0 else {"remove": [extra]}
        send_json("PATCH", url, body, timeout=10)
        time.sleep(0.5)
    record = json.load(urllib.request.urlopen(f"http://127.0.0.1:{madmin}/api/delivery", timeout=10))
    result = {
        "streams": streams, "changes": a.burst_changes, "deliveries": record["count"],
        "handed_to_all_ms_max": round(record["max"] * 1e3, 3),
        "handed_p50_ms": round(record["p50"] * 1e3, 3), "handed_p99_ms": round(record["p99"] * 1e3, 3),
        "mock_cpu_seconds": round(m.cpu(), 2),
    }
    m.stop()
    c.stop()
    return result


def local_cluster():
    """(the local control plane's env, whether this call started it)."""
    state = os.environ.get("DST_LOCAL_CLUSTER_DIR", os.path.join(REPO, ".local-cluster"))
    started = False
    if subprocess.run([os.path.join(REPO, "hack/local-cluster.sh"), "status"],
                      capture_output=True).returncode != 0:
        subprocess.run([os.path.join(REPO, "hack/local-cluster.sh"), "up"], check=True,
                       stdout=subprocess.DEVNULL)
        started = True
    env = {}
    for line in open(os.path.join(state, "env")):
        m = re.match(r"export (\w+)=(.*)", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env, started


def local_cluster_down(started):
    if started:
        subprocess.run([os.path.join(REPO, "hack/local-cluster.sh"), "down"], stdout=subprocess.DEVNULL)


def destination_pid(env):
    return Pid(int(open(os.path.join(env["DST_LOCAL_CLUSTER_DIR"], "run/destination.pid")).read()))


def scrape_url(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name = series.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def oscillating_churn(name, env, ns, services, lo, hi, hold, seconds):
    admin = free_port()
    p = Proc(name, ["churn", "--namespace", ns, "--oscillate-services", str(services),
                    "--oscillate-min-endpoints", str(lo), "--oscillate-max-endpoints", str(hi),
                    "--oscillate-min-hold", hold, "--oscillate-max-hold", hold,
                    "--duration", f"{seconds}s", "--cleanup-on-exit", "--seed", "7",
                    "--admin-addr", f"127.0.0.1:{admin}", "--log-level", "warn"], env=env)
    wait_for("churn ready", lambda: _up(admin), 120)
    return p, admin


def cluster_client(name, env, ns, services, streams_per_service, connections, seconds, slos=()):
    """A client of the real destination controller with the Kubernetes ground
    truth, for `seconds`; returns (proc, admin port, report path)."""
    admin = free_port()
    report = os.path.join(REPO, f"target/bench/{name}.json")
    args = ["client", "--destination-addr", env["DESTINATION_ADDR"], "--admin-addr", f"127.0.0.1:{admin}",
            "--target-services", f"oscillate-svc-{{0..{services - 1}}}.{ns}.svc.cluster.local:8080",
            "--streams-per-service", str(streams_per_service), "--connections", str(connections),
            "--ground-truth", "--node-name", "kwok-node-0", "--pod-namespace", "default",
            "--duration", f"{seconds}s", "--report", report, "--log-level", "warn", "--backoff-max", "5s"]
    for s in slos:
        args += ["--slo", s]
    return Proc(name, args, env=env), admin, report


# Where a client's CPU goes, by the outermost frame of each sample that
# names one of these (first match wins); samples naming none are "other".
CPU_PARTS = [
    ("http2 connection task (hyper, h2)", "H2ClientFuture"),
    ("endpoint stream tasks", "client::stream::Stream::run"),
    ("profile stream tasks", "client::profile"),
    ("staleness checks", "staleness"),
    ("ground truth watches", "kube_truth"),
    ("ground truth watches", "kube_runtime"),
    ("admin server", "axum"),
    ("waiting for I/O (epoll)", "epoll_wait"),
    ("parking and waking threads (futex)", "futex"),
]


def perf_record(pid, seconds, name):
    """Samples `pid` with perf for `seconds` (call graphs by DWARF); returns
    the data file, for perf_breakdown."""
    data = os.path.join(REPO, f"target/bench/{name}.perf.data")
    subprocess.run(["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf,16384", "-p", str(pid),
                    "-o", data, "--", "sleep", str(seconds)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return data


def perf_breakdown(data):
    """The share of the sampled CPU in each of CPU_PARTS, and the kernel's
    share (samples whose innermost frame is in the kernel, by system call).
    Slow (perf script unwinds every sample): call it after the window."""
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True, check=True).stdout
    parts, kernel, syscalls, total = {}, 0, {}, 0
    for sample in script.split("\n\n"):
        frames = [f.strip() for f in sample.strip().split("\n")[1:]]
        if not frames:
            continue
        total += 1
        part = next((label for label, pat in CPU_PARTS if any(pat in f for f in frames)), "other")
        parts[part] = parts.get(part, 0) + 1
        if "[kernel" in frames[0]:
            kernel += 1
            call = next((f.split()[1].split("+")[0] for f in frames if "__x64_sys_" in f), "no system call")
            syscalls[call] = syscalls.get(call, 0) + 1
    pct = lambda n: round(100 * n / total, 1) if total else None  # noqa: E731
    return {"samples": total, "percent_by_part": {k: pct(v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "percent_in_kernel": pct(kernel),
            "percent_in_kernel_by_call": {k: pct(v) for k, v in sorted(syscalls.items(), key=lambda kv: -kv[1])}}


def bench_controller(a):
    """Linkerd's real destination controller serving churn's oscillating
    services to our client, side by side: CPU per update received for each,
    their ratio, and the controller's memory."""
    env, started = local_cluster()
    dst = destination_pid(env)
    ns = f"bench-ctl-{os.getpid()}"
    services, streams = 10, a.controller_streams
    warmup, window = 20, a.seconds
    churn = None
    try:
        churn, _ = oscillating_churn("controller-churn", env, ns, services, 10, 50, "5s", warmup + window + 30)
        cl, admin, report = cluster_client("controller-client", env, ns, services, streams // services,
                                           100, warmup + window + 5)
        wait_for("client /ready", lambda: _ready(admin), 120)
        time.sleep(warmup - 5)
        r0 = by_label(admin, "destination_client_streams_reset_total", "reason")
        m0, c0, d0, t0 = scrape(admin), cl.cpu(), dst.cpu(), time.time()
        perf_data = None
        if a.client_perf:
            # Inside the window; perf's own cost lands on the sampled
            # process a little (in the kernel).
            perf_data = perf_record(cl.pid, min(a.client_perf, window), "controller-client")
        time.sleep(max(0, window - (time.time() - t0)))
        m1, c1, d1, t1 = scrape(admin), cl.cpu(), dst.cpu(), time.time()
        r1 = by_label(admin, "destination_client_streams_reset_total", "reason")
        resets = {k: v - r0.get(k, 0) for k, v in r1.items() if v - r0.get(k, 0)}
        ctl = scrape_url(f"http://{env['DESTINATION_METRICS_ADDR']}/metrics")
        rss, hwm = dst.mem()
        cl.wait(timeout=120)
        rep = json.load(open(report))
        breakdown = perf_breakdown(perf_data) if perf_data else None
        msgs = m1["destination_client_updates_received_total"] - m0["destination_client_updates_received_total"]
        client_cpu, ctl_cpu = c1 - c0, d1 - d0
        return {
            "streams": streams, "services": services, "connections": 100,
            "oscillation": "10 <-> 50 endpoints, 5s holds", "window_s": round(t1 - t0, 1),
            "messages_received": int(msgs),
            "controller_cpu_s": round(ctl_cpu, 2), "client_cpu_s": round(client_cpu, 2),
            "controller_us_per_message": round(ctl_cpu / msgs * 1e6, 1) if msgs else None,
            "client_us_per_message": round(client_cpu / msgs * 1e6, 1) if msgs else None,
            "client_to_controller_cpu_ratio": round(client_cpu / ctl_cpu, 3) if ctl_cpu else None,
            "controller_rss_mib": round(rss / 2**20, 1), "controller_peak_rss_mib": round(hwm / 2**20, 1),
            "controller_heap_inuse_mib": round(ctl.get("go_memstats_heap_inuse_bytes", 0) / 2**20, 1),
            "stale_streams": rep["stale_streams"],
            "errors_whole_run": rep["errors"],
            "resets_by_reason_in_window": resets,
            "services_never_served": rep.get("services_never_served"),
            "destination_leg_ms": {k: round(rep["destination_leg"][k] * 1e3, 1) for k in ("p50", "p99")},
            "kubernetes_leg_ms": {k: round(rep["kubernetes_leg"][k] * 1e3, 1) for k in ("p50", "p99")},
            "convergence_ms": {k: round(rep["convergence_latency"][k] * 1e3, 1) for k in ("p50", "p99")},
            **({"client_cpu_breakdown": breakdown} if breakdown else {}),
        }
    finally:
        if churn:
            churn.stop()
        local_cluster_down(started)


def bench_profile_path(a):
    """The controller's cost per update on the profile path next to the
    endpoint path, at the same message rate: 10 services, 100 streams each
    over 100 connections, every service changing once a second. Profile:
    stable services whose ServiceProfiles gain and lose a route every second
    (GetProfile streams, judged against the ServiceProfiles). Endpoint:
    services scaling 10 <-> 11 pods on 1 s holds (one address per update;
    Get streams with the ground truth). Each phase measures the CPU of the
    controller and of the client over the window, against the controller's
    idle CPU over the same time before either. A third phase, discovery, is
    the endpoint phase with an idle GetProfile stream beside every Get
    stream (`--proxy-discovery`): what holding the profile streams costs the
    controller while endpoints change."""
    env, started = local_cluster()
    dst = destination_pid(env)
    services, per_service = 10, a.profile_path_streams // 10
    warmup, window = 20, a.seconds
    out = {"services": services, "streams": services * per_service, "connections": 100,
           "window_s": window}
    procs = []
    try:
        d0 = dst.cpu()
        time.sleep(window)
        out["controller_idle_cores"] = round((dst.cpu() - d0) / window, 3)
        for phase in ("profile", "endpoint", "discovery"):
            ns = f"bench-path-{phase}-{os.getpid()}"
            total = warmup + window + 30
            admin_churn = free_port()
            if phase == "profile":
                churn_args = ["--stable-services", str(services), "--stable-endpoints", "10",
                              "--service-profiles", "--profile-routes", "2", "--profile-change-interval", "1s"]
                pattern = "stable"
                client_args = ["--streams-per-service", "1", "--profile-streams-per-service", str(per_service)]
                counter = "destination_client_profile_updates_received_total"
            else:
                churn_args = ["--oscillate-services", str(services), "--oscillate-min-endpoints", "10",
                              "--oscillate-max-endpoints", "11", "--oscillate-min-hold", "1s",
                              "--oscillate-max-hold", "1s"]
                pattern = "oscillate"
                # discovery: the same endpoint load, each Get stream with a
                # GetProfile stream of its target beside it (idle: no
                # ServiceProfile changes), as a proxy resolves a target.
                client_args = ["--streams-per-service", str(per_service),
                               *(["--proxy-discovery"] if phase == "discovery" else [])]
                counter = "destination_client_updates_received_total"
            churn = Proc(f"path-{phase}-churn", ["churn", "--namespace", ns, *churn_args, "--duration", f"{total}s",
                                                 "--cleanup-on-exit", "--seed", "7", "--admin-addr",
                                                 f"127.0.0.1:{admin_churn}", "--log-level", "warn"], env=env)
            procs.append(churn)
            wait_for("churn ready", lambda port=admin_churn: _up(port), 120)
            admin = free_port()
            cl = Proc(f"path-{phase}-client", [
                "client", "--destination-addr", env["DESTINATION_ADDR"], "--admin-addr", f"127.0.0.1:{admin}",
                "--target-services", f"{pattern}-svc-{{0..{services - 1}}}.{ns}.svc.cluster.local:8080",
                *client_args, "--connections", "100", "--ground-truth", "--node-name", "kwok-node-0",
                "--pod-namespace", "default", "--duration", f"{warmup + window + 5}s",
                "--log-level", "warn", "--backoff-max", "5s"], env=env)
            procs.append(cl)
            wait_for("client /ready", lambda port=admin: _ready(port), 120)
            time.sleep(warmup - 5)
            m0, c0, d0 = scrape(admin), cl.cpu(), dst.cpu()
            time.sleep(window)
            m1, c1, d1 = scrape(admin), cl.cpu(), dst.cpu()
            msgs = m1.get(counter, 0) - m0.get(counter, 0)
            stale = m1.get("destination_client_profile_stale_streams" if phase == "profile"
                           else "destination_client_stale_streams", 0)
            ctl, client_cpu = d1 - d0, c1 - c0
            busy = ctl - out["controller_idle_cores"] * window
            out[phase] = {
                "messages_received": int(msgs),
                "controller_cpu_s": round(ctl, 2), "client_cpu_s": round(client_cpu, 2),
                "controller_us_per_message": round(ctl / msgs * 1e6, 1) if msgs else None,
                "controller_us_per_message_above_idle": round(busy / msgs * 1e6, 1) if msgs else None,
                "client_us_per_message": round(client_cpu / msgs * 1e6, 1) if msgs else None,
                "client_to_controller_cpu_ratio": round(client_cpu / ctl, 3) if ctl else None,
                "stale_streams_at_end": int(stale),
            }
            cl.wait(timeout=120)
            churn.stop()
        return out
    finally:
        for p in procs:
            p.stop()
        local_cluster_down(started)


def _ready(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).status == 200
    except OSError:
        return False


def bench_redline(a):
    """The real destination controller's red line on this machine: streams
    stepped up (x2) against oscillating services until the plan's scenario 5
    criterion fails (p99 convergence under 10s, no stale streams). Each step's
    client CPU is recorded; a step whose client used more than 90% of a core
    is marked client-bound and not counted as the controller's red line.
    Every step takes a 15 s CPU profile of the controller (-enable-pprof);
    the one at the red line (or the last step) is printed with pprof -top."""
    env, started = local_cluster()
    dst = destination_pid(env)
    ns = f"bench-red-{os.getpid()}"
    services = 10
    steps = [int(s) for s in a.redline_steps.split(",")]
    per_step = a.seconds + 15
    churn = None
    rows, profile = [], None
    try:
        churn, _ = oscillating_churn("redline-churn", env, ns, services, 10, 50, "5s",
                                     per_step * len(steps) + 120)
        for streams in steps:
            name = f"redline-client-{streams}"
            cl, admin, report = cluster_client(name, env, ns, services, max(1, streams // services),
                                               min(100, streams), per_step,
                                               slos=("convergence_latency.p99<10s", "stale_streams==0"))
            t0, c0, d0 = time.time(), cl.cpu(), dst.cpu()
            time.sleep(per_step - 20)
            # A 15 s CPU profile of the controller, every step (sampling, cheap).
            prof_path = os.path.join(REPO, f"target/bench/controller-{streams}.pprof")
            with open(prof_path, "wb") as f:
                f.write(urllib.request.urlopen(
                    f"http://{env['DESTINATION_METRICS_ADDR']}/debug/pprof/profile?seconds=15", timeout=60).read())
            c1, d1 = cl.cpu(), dst.cpu()
            t1 = time.time()
            resets = by_label(admin, "destination_client_streams_reset_total", "reason")
            cl.wait(timeout=300)
            rep = json.load(open(report))
            rss, hwm = dst.mem()
            client_core = (c1 - c0) / (t1 - t0)
            passed = all(v["pass"] for v in rep["slos"])
            row = {
                "streams": streams, "pass": passed, "client_bound": client_core > 0.9,
                "client_cores": round(client_core, 2), "controller_cores": round((d1 - d0) / (t1 - t0), 2),
                "controller_peak_rss_mib": round(hwm / 2**20, 1),
                "convergence_p99_ms": round(rep["convergence_latency"]["p99"] * 1e3, 1),
                "destination_leg_p99_ms": round(rep["destination_leg"]["p99"] * 1e3, 1),
                "stale_streams": rep["stale_streams"], "unconverged": rep["streams_unconverged"],
                "errors": rep["errors"], "resets": rep["streams_reset"], "resets_by_reason": resets,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            profile = prof_path
            if not passed and not row["client_bound"]:
                break
    finally:
        if churn:
            churn.stop()
        local_cluster_down(started)
    top = pprof_top(profile)
    red = next((r["streams"] for r in rows if not r["pass"] and not r["client_bound"]), None)
    return {"services": services, "oscillation": "10 <-> 50 endpoints, 5s holds", "steps": rows,
            "red_line_streams": red, "profile": profile, "profile_top": top}


def pprof_top(profile):
    """The top 25 functions of a CPU profile (printed), or None without one."""
    if not profile or not os.path.exists(profile):
        return None
    # Go profiles carry their symbols: no binary needed.
    r = subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=25", profile],
                       capture_output=True, text=True)
    print(r.stdout)
    return r.stdout


def histogram(port, name):
    """A client histogram's cumulative buckets {le: count}, all series summed."""
    out = {}
    for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode().splitlines():
        if line.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            out[float(le)] = out.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def bench_storm(a):
    """Reset storms against the real destination controller: every stream
    of a client (stable services, nothing else changing) re-Gets at once, as
    all proxies do after a controller restart. For each storm: the
    controller's CPU in the 10 s after against the 10 s before, its peak RSS
    against the RSS before, and how long until every stream had its first
    update again (the largest time-to-first-update bucket the storm filled)."""
    env, started = local_cluster()
    dst = destination_pid(env)
    ns = f"bench-storm-{os.getpid()}"
    services, streams, every, storms = 10, a.storm_streams, 30, 3
    churn_admin = free_port()
    churn = cl = None
    rows = []
    try:
        churn = Proc("storm-churn", ["churn", "--namespace", ns, "--stable-services", str(services),
                                     "--stable-endpoints", "100", "--cleanup-on-exit",
                                     "--admin-addr", f"127.0.0.1:{churn_admin}", "--log-level", "warn"], env=env)
        wait_for("churn ready", lambda: _ready(churn_admin), 180)
        admin = free_port()
        cl = Proc("storm-client", [
            "client", "--destination-addr", env["DESTINATION_ADDR"], "--admin-addr", f"127.0.0.1:{admin}",
            "--target-services", f"stable-svc-{{0..{services - 1}}}.{ns}.svc.cluster.local:8080",
            "--streams-per-service", str(streams // services), "--connections", str(min(100, streams)),
            "--node-name", "kwok-node-0", "--pod-namespace", "default", "--log-level", "warn",
            "--reset-storm-interval", f"{every}s", "--duration", f"{every * storms + 15}s"], env=env)
        wait_for("every stream answered", lambda: _ready(admin), 180)
        ttfu = "destination_client_time_to_first_update_seconds"
        for k in range(storms):
            before_hist = histogram(admin, ttfu)
            c0, t0 = dst.cpu(), time.time()
            rss_before = dst.mem()[0]
            base = by_label(admin, "destination_client_streams_reset_total", "reason").get("reset_storm", 0)
            target = base + streams
            wait_for(f"storm {k + 1}", lambda target=target: by_label(
                admin, "destination_client_streams_reset_total", "reason").get("reset_storm", 0) >= target,
                every + 30)
            c1, t1 = dst.cpu(), time.time()
            peak = rss_before
            while time.time() < t1 + 10:
                peak = max(peak, dst.mem()[0])
                time.sleep(0.25)
            c2, t2 = dst.cpu(), time.time()
            after = histogram(admin, ttfu)
            filled = [le for le in sorted(after) if after[le] - before_hist.get(le, 0) >= streams]
            rows.append({
                "storm": k + 1, "streams": streams,
                "controller_cores_before": round((c1 - c0) / (t1 - t0), 3),
                "controller_cores_10s_after": round((c2 - c1) / (t2 - t1), 3),
                "controller_cpu_seconds_10s_after": round(c2 - c1, 2),
                "controller_rss_before_mib": round(rss_before / 2**20, 1),
                "controller_peak_rss_after_mib": round(peak / 2**20, 1),
                "every_stream_answered_within_s": filled[0] if filled else None,
            })
            print(json.dumps(rows[-1]), flush=True)
    finally:
        for p in (cl, churn):
            if p:
                p.stop()
        local_cluster_down(started)
    return {"services": services, "endpoints_per_service": 100, "streams": streams,
            "storm_every_s": every, "storms": rows}


def goroutines_on_workload_lock(env):
    """Goroutines of the controller parked on a lock inside its workload
    watcher (a goroutine profile, debug=1: '<count> @ ...' then its frames)."""
    text = urllib.request.urlopen(
        f"http://{env['DESTINATION_METRICS_ADDR']}/debug/pprof/goroutine?debug=1", timeout=30).read().decode()
    blocked = 0
    for group in text.split("\n\n"):
        m = re.match(r"(\d+) @", group)
        if m and "runtime_Semacquire" in group and "WorkloadWatcher" in group:
            blocked += int(m.group(1))
    return blocked


def running_pods(env, ns):
    out = subprocess.run([env["DST_LOCAL_KUBECTL"], "get", "pods", "-n", ns, "-o",
                          "jsonpath={range .items[*]}{.status.phase} {.status.podIP}{'\\n'}{end}"],
                         env={**os.environ, **env}, capture_output=True, text=True).stdout
    return sum(1 for ln in out.splitlines() if ln.startswith("Running ") and ln.split()[1:])


def pod_storm_cell(env, dst, ns, pods, servers, per_service, every, prof):
    """One pod-storm cell: a client of `pods` pods' IP:port; its two storms
    measured (see bench_pod_storm). With `prof`, storm 2 is a CPU profile."""
    ttfu = "destination_client_profile_time_to_first_update_seconds"
    metrics_url = f"http://{env['DESTINATION_METRICS_ADDR']}/metrics"
    subscribers_before = scrape_url(metrics_url).get("workload_subscribers", 0)
    chosen = ",".join(f"stable-svc-{i}" for i in range(-(-pods // per_service)))
    admin = free_port()
    cl = Proc(f"pods-client-{pods}-{servers}", [
        "client", "--destination-addr", env["DESTINATION_ADDR"],
        "--admin-addr", f"127.0.0.1:{admin}", "--namespace", ns,
        "--target-pods", f"app.kubernetes.io/name in ({chosen})", "--target-pods-port", "8080",
        "--target-pods-storm-interval", f"{every}s", "--connections", "1",
        "--node-name", "kwok-node-0", "--pod-namespace", "default", "--log-level", "warn",
        "--duration", f"{every * 2 + 14}s"], env=env)
    wait_for("every pod stream answered", lambda: _ready(admin), 300)
    targets = int(metric_or_zero(admin, "destination_client_profile_streams_active"))

    def storms():
        return by_label(admin, "destination_client_profile_streams_reset_total", "reason").get("target_storm", 0)

    row = {"pods": targets, "servers": servers}
    base = storms()
    # Storm 1: CPU and time to answer everything again.
    before_hist = histogram(admin, ttfu)
    c0, k0, t0 = dst.cpu(), cl.cpu(), time.time()
    wait_for("storm 1", lambda: storms() >= base + targets, every + 30)
    c1, k1, t1 = dst.cpu(), cl.cpu(), time.time()
    time.sleep(10)
    c2, k2, t2 = dst.cpu(), cl.cpu(), time.time()
    after = histogram(admin, ttfu)
    filled = [le for le in sorted(after) if after[le] - before_hist.get(le, 0) >= targets]
    rate = (c1 - c0) / (t1 - t0)
    extra = (c2 - c1) - rate * (t2 - t1)
    client_extra = (k2 - k1) - (k1 - k0) / (t1 - t0) * (t2 - t1)
    row.update({
        "controller_cores_before": round(rate, 3),
        "controller_cpu_s_10s_after": round(c2 - c1, 3),
        "controller_us_per_opening": round(extra / targets * 1e6, 1),
        "client_us_per_opening": round(client_extra / targets * 1e6, 1),
        "client_to_controller_cpu": round(client_extra / extra, 3) if extra > 0 else None,
        "every_stream_answered_within_s": filled[0] if filled else None,
    })
    # Storm 2: goroutines parked on the workload watcher's lock, or a profile.
    wait_for("storm 2", lambda: storms() >= base + targets + 1, every + 30)
    if prof:
        data = urllib.request.urlopen(
            f"http://{env['DESTINATION_METRICS_ADDR']}/debug/pprof/profile?seconds=10", timeout=60).read()
        open(prof, "wb").write(data)
    else:
        peak, end = 0, time.time() + 5
        while time.time() < end:
            peak = max(peak, goroutines_on_workload_lock(env))
            time.sleep(0.5)
        row["goroutines_on_workload_lock_peak"] = peak
    cl.wait(timeout=120)
    # Every stream closed: the controller's subscriber gauge should be back.
    time.sleep(2)
    ctl = scrape_url(metrics_url)
    row["workload_subscribers_left"] = ctl.get("workload_subscribers", 0) - subscribers_before
    return row


def bench_pod_storm(a):
    """Linkerd #15583's shape: GetProfile by pod IP:port for every selected
    pod (a meshed scraper's proxy: one connection, one stream per pod), all
    re-opened at once every 20 s, against storm size x Servers in the
    namespace. Storm 1 measures the controller's CPU (the 10 s after it, less
    its rate before) and how long until every stream was answered again;
    storm 2 counts the controller's goroutines parked on the workload
    watcher's lock (goroutine profiles every 0.5 s: -enable-pprof sets no
    mutex or block profile rate, so those profiles stay empty); the largest
    cell also takes a 10 s CPU profile across storm 2."""
    env, started = local_cluster()
    dst = destination_pid(env)
    ns = f"bench-pods-{os.getpid()}"
    sizes = [int(x) for x in a.pod_storm_pods.split(",")]
    server_counts = sorted(int(x) for x in a.pod_storm_servers.split(","))
    services = 10
    per_service = -(-max(sizes) // services)
    every = 20
    churn = None
    rows, profile = [], None
    try:
        churn_admin = free_port()
        churn = Proc("pods-churn", ["churn", "--namespace", ns, "--stable-services", str(services),
                                    "--stable-endpoints", str(per_service), "--cleanup-on-exit",
                                    "--admin-addr", f"127.0.0.1:{churn_admin}", "--log-level", "warn"], env=env)
        wait_for("churn ready", lambda: _ready(churn_admin), 300)
        wait_for(f"{services * per_service} pods running",
                 lambda: running_pods(env, ns) >= services * per_service, 600)
        for servers in server_counts:
            if servers:
                admin = free_port()
                Proc("pods-servers", ["churn", "--namespace", ns, "--stable-services", str(services),
                                      "--stable-endpoints", str(per_service), "--servers", str(servers),
                                      "--duration", "1s", "--admin-addr", f"127.0.0.1:{admin}",
                                      "--log-level", "warn"], env=env).wait(timeout=300)
                # The Servers' own events settle before the first cell.
                time.sleep(30)
            for pods in sizes:
                largest = pods == max(sizes) and servers == server_counts[-1]
                prof = os.path.join(REPO, f"target/bench/pod-storm-{pods}-{servers}.pprof") if largest else None
                row = pod_storm_cell(env, dst, ns, pods, servers, per_service, every, prof)
                profile = prof or profile
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if churn:
            churn.stop()
        local_cluster_down(started)
    top = pprof_top(profile)
    return {"services": services, "storm_every_s": every, "connections": 1, "cells": rows,
            "profile": profile, "profile_top": top}


def bench_pod_orphans(a):
    """Whether a GetProfile storm by pod IP leaves streams the controller no
    longer updates. 400 pods, Servers with proxyProtocol unknown; a
    scraper-like client (one connection, one stream per pod IP:8080, the
    ground truth on, 5 s grace) re-opens every stream at once 10 times, 4 s
    apart, then holds them. 400 pods and 800 Servers unless --pod-orphans-servers
    says otherwise. Then srv-0..srv-9 (one per service) turn opaque:
    every stream should say opaque. Reported: the streams the client finds
    stale 20 s later, which pods they are, and the controller's
    'Cannot unsubscribe from unknown ip:port' lines when the client closes
    them (a listener on a publisher no longer in the watcher's map)."""
    env, started = local_cluster()
    ns = f"bench-orphans-{os.getpid()}"
    services, per_service, servers, storms, every = 10, 40, a.pod_orphans_servers, 10, 4
    pods = services * per_service
    log_path = os.path.join(env["DST_LOCAL_CLUSTER_DIR"], "logs/destination.log")

    def unsubscribe_errors():
        return re.findall(r"Cannot unsubscribe from unknown ip:port \[([0-9.]+):8080\]", open(log_path).read())

    churn = None
    try:
        churn_admin = free_port()
        churn = Proc("orphans-churn", ["churn", "--namespace", ns, "--stable-services", str(services),
                                       "--stable-endpoints", str(per_service), "--servers", str(servers),
                                       "--cleanup-on-exit", "--admin-addr", f"127.0.0.1:{churn_admin}",
                                       "--log-level", "warn"], env=env)
        wait_for("churn ready", lambda: _ready(churn_admin), 300)
        wait_for(f"{pods} pods running", lambda: running_pods(env, ns) >= pods, 600)
        time.sleep(30)
        errors_before = len(unsubscribe_errors())
        admin = free_port()
        name = "orphans-client"
        cl = Proc(name, [
            "client", "--destination-addr", env["DESTINATION_ADDR"], "--admin-addr", f"127.0.0.1:{admin}",
            "--namespace", ns, "--target-pods", "app.kubernetes.io/managed-by=dst-load-controller",
            "--target-pods-port", "8080", "--connections", "1",
            "--target-pods-storm-interval", f"{every}s", "--target-pods-storms", str(storms),
            "--ground-truth", "--staleness-grace", "5s", "--node-name", "kwok-node-0",
            "--pod-namespace", "default", "--log-level", "warn", "--duration", f"{every * storms + 60}s"], env=env)
        wait_for("every pod stream answered", lambda: _ready(admin), 300)

        def storm_resets():
            return by_label(admin, "destination_client_profile_streams_reset_total", "reason").get("target_storm", 0)

        wait_for("the storms", lambda: storm_resets() >= storms * pods, every * storms + 60)
        # Past the grace: what the storms left stale shows before the flip.
        time.sleep(7)
        stale_before_flip = metric_or_zero(admin, "destination_client_profile_stale_streams")
        kubectl = [env["DST_LOCAL_KUBECTL"], "-n", ns]
        for k in range(services):
            subprocess.run([*kubectl, "patch", "servers.policy.linkerd.io", f"srv-{k}", "--type", "merge",
                            "-p", '{"spec":{"proxyProtocol":"opaque"}}'],
                           env={**os.environ, **env}, check=True, capture_output=True)
        time.sleep(20)
        stale = metric_or_zero(admin, "destination_client_profile_stale_streams")
        cl.wait(timeout=every * storms + 120)
        # The controller logs the failed unsubscriptions as it tears the streams down.
        time.sleep(5)
        log = re.sub(r"\x1b\[[0-9;]*m", "", open(os.path.join(REPO, f"target/bench/{name}.log")).read())
        stale_ips = sorted(set(re.findall(r"profile stream is stale.*?target=([0-9.]+):8080", log)))
        errors = unsubscribe_errors()[errors_before:]
    finally:
        if churn:
            churn.stop()
        local_cluster_down(started)
    return {
        "pods": pods, "servers": servers, "storms": storms, "storm_every_s": every,
        "stale_before_flip": stale_before_flip, "stale_after_flip": stale,
        "stale_pod_ips": stale_ips,
        "controller_cannot_unsubscribe_lines": len(errors),
        "stale_ips_with_such_a_line": len(set(stale_ips) & set(errors)),
    }


def bench_churn(a):
    """churn against the local control plane: the request rate it reaches
    against --qps, and how late scale events are dispatched."""
    env, started = local_cluster()
    results = []
    try:
        for label, services, hold, qps in [("under --qps", 10, "1s", 100), ("over --qps", 40, "200ms", 50)]:
            ns = f"bench-churn-{os.getpid()}-{len(results)}"
            admin = free_port()
            report = os.path.join(REPO, f"target/bench/churn-{len(results)}.json")
            p = Proc(f"churn-{len(results)}", ["churn", "--namespace", ns, "--oscillate-services", str(services),
                                               "--oscillate-min-endpoints", "1", "--oscillate-max-endpoints", "2",
                                               "--oscillate-min-hold", hold, "--oscillate-max-hold", hold,
                                               "--qps", str(qps), "--burst", str(qps),
                                               "--duration", f"{a.seconds}s", "--cleanup-on-exit",
                                               "--admin-addr", f"127.0.0.1:{admin}", "--log-level", "warn",
                                               "--report", report],
                     env=env)
            wait_for("churn ready", lambda a=admin: _up(a), 60)
            time.sleep(2)
            r0, t0 = scrape(admin), time.time()
            time.sleep(max(1, a.seconds - 6))
            r1, t1 = scrape(admin), time.time()
            calls = (r1["churn_api_request_duration_seconds_count"]
                     - r0["churn_api_request_duration_seconds_count"])
            cpu = p.cpu()
            p.wait(timeout=180)
            r = json.load(open(report))
            results.append({
                "case": label, "services": services, "hold": hold, "qps": qps,
                "requests_per_second": round(calls / (t1 - t0), 1),
                "scale_events": r["scale_events"], "api_errors": r["api_errors"],
                "dispatch_lag_p50_ms": round(r["dispatch_lag"]["p50"] * 1e3, 3),
                "dispatch_lag_p99_ms": round(r["dispatch_lag"]["p99"] * 1e3, 3),
                "dispatch_lag_max_ms": round(r["dispatch_lag"]["max"] * 1e3, 3),
                "churn_cpu_seconds": round(cpu, 2),
            })
    finally:
        local_cluster_down(started)
    return results


class Busy:
    """A busy loop on one core (a shell spinning), stopped like a child."""

    def __init__(self):
        self.p = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        LIVE.append(self)

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        self.p.kill()
        self.p.wait()


def repeated_run(name, delay, runs, seed):
    """`run --repeat RUNS` of a short plan on the mock (every update delayed
    DELAY); returns the report's path."""
    report = os.path.join(REPO, f"target/bench/{name}.json")
    args = ["run", "--scenario", "small-oscillation", "--services", "2",
            "--streams-per-service", "3", "--connections", "3",
            "--min-endpoints", "2", "--max-endpoints", "6",
            "--min-hold", "500ms", "--max-hold", "500ms", "--jitter", "0s",
            "--duration", "2s", "--settle", "10s", "--seed", str(seed),
            "--mock-delay", delay, "--admin-addr", "127.0.0.1:0",
            "--slo", "errors==0", "--repeat", str(runs), "--report", report]
    Proc(name, args).wait(timeout=600)
    return report


def compare_verdict(base, new, threshold, single=False):
    """`compare` of two reports: (worse figures, too few runs?). With
    SINGLE, both reports lose their repeats first (the single-run mode on
    their first runs)."""
    if single:
        for path in (base, new):
            v = json.load(open(path))
            v.pop("repeats", None)
            json.dump(v, open(path + ".single", "w"))
        base, new = base + ".single", new + ".single"
    out = subprocess.run([BIN, "compare", base, new, "--threshold", threshold, "--report", "-"],
                         capture_output=True, text=True)
    if out.returncode not in (0, 4):
        raise SystemExit(f"compare failed ({out.returncode}): {out.stderr}")
    rows = json.loads(out.stdout)["rows"]
    return [r["metric"] for r in rows if r["verdict"] == "worse"], any(r["verdict"] == "too few runs" for r in rows)


def bench_verdicts(a):
    """The false-alarm rate and the power of `compare` over repeated runs,
    with two busy loops on the cores: PAIRS times, three `run --repeat RUNS`
    of one seeded plan on the mock, two with a delay of D per update and
    one with D + 10%; `compare` of the two alike must not say worse, of the
    slower one must. The single-run mode on the same reports' first runs,
    for contrast."""
    delay_ms = a.verdict_delay_ms
    slower = f"{delay_ms * 1.1:g}ms"
    busy = [Busy(), Busy()]
    aa, aa_single, power, power_single, figures = 0, 0, 0, 0, {}
    try:
        for i in range(a.verdict_pairs):
            seed = i + 1
            base = repeated_run("verdicts-base", f"{delay_ms}ms", a.verdict_runs, seed)
            again = repeated_run("verdicts-again", f"{delay_ms}ms", a.verdict_runs, seed)
            slow = repeated_run("verdicts-slow", slower, a.verdict_runs, seed)
            worse, few = compare_verdict(base, again, a.verdict_threshold)
            if few:
                raise SystemExit(f"--verdict-runs {a.verdict_runs} is too few for the rank test")
            aa += bool(worse)
            for m in worse:
                figures[m] = figures.get(m, 0) + 1
            aa_single += bool(compare_verdict(base, again, a.verdict_threshold, single=True)[0])
            found, _ = compare_verdict(base, slow, a.verdict_threshold)
            power += bool(found)
            power_single += bool(compare_verdict(base, slow, a.verdict_threshold, single=True)[0])
            print(f"pair {i + 1}: A/A {'WORSE ' + ','.join(worse) if worse else 'same'}; "
                  f"+10% {'worse' if found else 'MISSED'}", flush=True)
    finally:
        for b in busy:
            b.stop()
    return {"pairs": a.verdict_pairs, "runs_a_side": a.verdict_runs, "delay": f"{delay_ms}ms",
            "slower": slower, "threshold": a.verdict_threshold, "busy_loops": 2,
            "false_alarms": aa, "false_alarm_figures": figures, "power": power,
            "single_run_false_alarms": aa_single, "single_run_power": power_single}


def version_cluster(version):
    """Brings up a local control plane of Linkerd VERSION beside the others
    (hack/e2e.sh's names: stable-2.14.2 -> v2142, edge-26.8.3 -> edge2683);
    returns (its name, its env)."""
    name = version_cluster_name(version)
    cmd = [os.path.join(REPO, "hack/local-cluster.sh"), "--name", name]
    if subprocess.run(cmd + ["status"], capture_output=True).returncode != 0:
        subprocess.run(cmd + ["up", "--linkerd", version], check=True, stdout=subprocess.DEVNULL)
    env = {}
    for line in open(os.path.join(REPO, ".local-clusters", name, "env")):
        m = re.match(r"export (\w+)=(.*)", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    if env.get("DST_LOCAL_LINKERD_VERSION") != version:
        sys.exit(f"bench: cluster {name} runs {env.get('DST_LOCAL_LINKERD_VERSION')}, not {version}: "
                 f"hack/local-cluster.sh --name {name} down first")
    return name, env


class Sampler:
    """Polls a run's admin /metrics and the controller's every half second:
    updates received (summed across the counter restarting with each run of
    --repeat) and the controller's peak heap in use."""

    def __init__(self, admin, ctl_metrics):
        self.admin, self.ctl = admin, ctl_metrics
        self.updates, self.last, self.heap_peak = 0.0, 0.0, 0.0
        self.done = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.done.wait(0.5):
            try:
                n = scrape(self.admin).get("destination_client_updates_received_total", 0.0)
                if n < self.last:
                    self.updates += self.last
                self.last = n
            except (OSError, ValueError):
                pass
            try:
                self.heap_peak = max(self.heap_peak, scrape_url(self.ctl).get("go_memstats_heap_inuse_bytes", 0.0))
            except (OSError, ValueError):
                pass

    def stop(self):
        self.done.set()
        self.t.join()
        return self.updates + self.last, self.heap_peak


def bench_versions(a):
    """The same seeded plan (hack/redline-scenario.yaml: 10 services
    oscillating 10 <-> 50 on 5 s holds) against every Linkerd version of
    --versions, each on its own local control plane, one at a time: `run
    --repeat` of --versions-streams streams (destination leg p50/p99 over the
    runs, controller CPU per update received, controller heap per stream),
    then `run --find-red-line` (each step --versions-redline-repeat times);
    `compare` of each version with the one before."""
    versions = a.versions.split(",")
    scenario = os.path.join(REPO, "hack/redline-scenario.yaml")
    rows, reports = [], {}
    for version in versions:
        name, env = version_cluster(version)
        # The other versions' control planes stop: no idle peer shares the cores.
        for other in versions:
            if other != version:
                n = version_cluster_name(other)
                subprocess.run([os.path.join(REPO, "hack/local-cluster.sh"), "--name", n, "down"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dst = destination_pid(env)
        ctl_metrics = f"http://{env['DESTINATION_METRICS_ADDR']}/metrics"
        heap0 = scrape_url(ctl_metrics).get("go_memstats_heap_inuse_bytes", 0.0)
        common = ["--destination-addr", env["DESTINATION_ADDR"],
                  "--cluster-domain", env["DST_LOCAL_CLUSTER_DOMAIN"], "--scenario-file", scenario,
                  "--connections", "100", "--log-level", "warn"]
        admin = free_port()
        report = os.path.join(REPO, f"target/bench/versions-{name}.json")
        per_service = a.versions_streams // 10
        run = Proc(f"versions-{name}", ["run", *common, "--namespace", f"bench-ver-{name}",
                                        "--streams-per-service", str(per_service),
                                        "--duration", f"{a.seconds}s", "--repeat", str(a.versions_runs),
                                        "--admin-addr", f"127.0.0.1:{admin}", "--report", report], env=env)
        sampler = Sampler(admin, ctl_metrics)
        d0, t0 = dst.cpu(), time.time()
        run.wait(timeout=600 * a.versions_runs)
        d1, t1 = dst.cpu(), time.time()
        updates, heap_peak = sampler.stop()
        rep = json.load(open(report))
        runs = rep.get("repeats") or []
        leg = {q: sorted(r["figures"].get(f"destination_leg.{q}", float("nan")) * 1e3 for r in runs)
               for q in ("p50", "p99")}
        streams = per_service * 10
        red_report = os.path.join(REPO, f"target/bench/versions-{name}-redline.json")
        Proc(f"versions-{name}-redline", ["run", *common, "--namespace", f"bench-ver-red-{name}",
                                          "--find-red-line", "--red-line-max", str(a.versions_redline_max),
                                          "--red-line-precision", "25%", "--repeat", str(a.versions_redline_repeat),
                                          "--admin-addr", "127.0.0.1:0",
                                          "--report", red_report], env=env).wait(timeout=7200)
        red = json.load(open(red_report))
        row = {
            "version": version, "cluster": name, "runs": len(runs), "streams": streams,
            "runs_passed": sum(1 for r in runs if r.get("passed")),
            "destination_leg_p50_ms_median": round(leg["p50"][len(runs) // 2], 1) if runs else None,
            "destination_leg_p99_ms_median": round(leg["p99"][len(runs) // 2], 1) if runs else None,
            "destination_leg_p99_ms_range": [round(leg["p99"][0], 1), round(leg["p99"][-1], 1)] if runs else None,
            "updates_received": int(updates), "controller_cpu_s": round(d1 - d0, 1), "wall_s": round(t1 - t0),
            "controller_us_per_update": round((d1 - d0) / updates * 1e6, 1) if updates else None,
            "controller_heap_kib_per_stream": round((heap_peak - heap0) / streams / 1024, 1),
            # The search's load is streams per service (10 services).
            "red_line_streams_held": (red["find_red_line"]["search"].get("pass") or 0) * 10,
            "red_line_streams_failed": (red["find_red_line"]["search"].get("fail") or 0) * 10 or None,
            "red_line_client_bound_at": red["find_red_line"].get("client_bound_at"),
        }
        rows.append(row)
        reports[version] = report
        print(json.dumps(row), flush=True)
    verdicts = []
    for base, new in zip(versions, versions[1:], strict=False):
        out = subprocess.run([BIN, "compare", reports[base], reports[new], "--report", "-"],
                             capture_output=True, text=True)
        if out.returncode not in (0, 4):
            sys.exit(f"bench: compare {base} {new} failed ({out.returncode}): {out.stderr}")
        rows_ = json.loads(out.stdout)["rows"]
        verdicts.append({"base": base, "new": new, "exit": out.returncode,
                         "worse": [r["metric"] for r in rows_ if r["verdict"] == "worse"],
                         "better": [r["metric"] for r in rows_ if r["verdict"] == "better"]})
        print(json.dumps(verdicts[-1]), flush=True)
    return {"plan": "hack/redline-scenario.yaml, 100 connections", "versions": rows, "compare": verdicts}


def version_cluster_name(version):
    digits = "".join(c for c in version.split("-", 1)[-1] if c.isdigit())
    return ("v" if version.startswith("stable-") else "edge") + digits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="*", default=["capacity", "fanout", "churn"])
    ap.add_argument("--streams", type=int, default=100_000, help="capacity: streams (default 100000)")
    ap.add_argument("--fanout-streams", type=int, default=10_000, help="fanout: streams (default 10000)")
    ap.add_argument("--connections", type=int, default=100, help="fanout: client connections")
    ap.add_argument("--min-endpoints", type=int, default=10)
    ap.add_argument("--max-endpoints", type=int, default=200)
    ap.add_argument("--hold", default="1s", help="fanout: hold at each end")
    ap.add_argument("--seconds", type=int, default=20, help="measurement window")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--controller-streams", type=int, default=1000, help="controller: streams (default 1000)")
    ap.add_argument("--client-perf", type=int, default=0, metavar="SECONDS",
                    help="controller: sample the client with perf for SECONDS of the window and give where its CPU "
                         "goes (needs perf; the release build has debug info)")
    ap.add_argument("--profile-path-streams", type=int, default=1000,
                    help="profile-path: streams of each phase (default 1000)")
    ap.add_argument("--storm-streams", type=int, default=2000, help="storm: streams (default 2000)")
    ap.add_argument("--peer-streams", default="2000,10000",
                    help="mock-peer: streams of each comparison (default 2000,10000)")
    ap.add_argument("--peer-metadata", choices=["same", "bare"], default="same",
                    help="mock-peer: every address with the same pod labels, identity and hint on both servers "
                         "(same, the default), or as little as each sends (bare: the 2020 mock's README example, "
                         "ours with --bare-endpoints: addresses and weights only)")
    ap.add_argument("--policy-names", type=int, default=50_000,
                    help="policy-names: service names looked up, each once (default 50000)")
    ap.add_argument("--policy-names-step", type=int, default=10_000,
                    help="policy-names: names between readings of the controller (default 10000)")
    ap.add_argument("--policy-names-watch", action="store_true",
                    help="policy-names: a Watch per name, closed after its first policy (default: a Get)")
    ap.add_argument("--policy-events", type=int, default=30,
                    help="policy-names: Services created and then deleted, timed before and after (default 30)")
    ap.add_argument("--proxy-changes", type=int, default=200, help="proxy: changes timed (default 200)")
    ap.add_argument("--proxy-sizes", default="10,100,1000,10000",
                    help="proxy: endpoints per service of each cost cell (default 10,100,1000,10000; "
                         "empty: latency only)")
    ap.add_argument("--proxy-rates", default="1,10,50",
                    help="proxy: changes per second of each cost cell (default 1,10,50)")
    ap.add_argument("--proxy-added", type=int, default=10,
                    help="proxy: endpoints added beside serving ones, timed (default 10; each may take 30 s)")
    ap.add_argument("--proxy-new-connections", action="store_true",
                    help="proxy: latency requests each on a new connection (default: one kept alive)")
    ap.add_argument("--proxy-backend-ms", type=float, default=0,
                    help="proxy: the backends answer after this long (default 0)")
    ap.add_argument("--burst-streams", type=int, default=1000, help="burst: streams of one destination")
    ap.add_argument("--burst-changes", type=int, default=20, help="burst: changes made")
    ap.add_argument("--pod-storm-pods", default="200,400,800",
                    help="pod-storm: pods targeted per cell (default 200,400,800)")
    ap.add_argument("--pod-storm-servers", default="0,200,800",
                    help="pod-storm: Servers in the namespace per cell (default 0,200,800)")
    ap.add_argument("--pod-orphans-servers", type=int, default=800,
                    help="pod-orphans: Servers in the namespace (default 800)")
    ap.add_argument("--redline-steps", default="500,1000,2000,4000,8000",
                    help="redline: total streams per step (default 500,1000,2000,4000,8000)")
    ap.add_argument("--versions", default="stable-2.14.1,stable-2.14.2,edge-26.8.3",
                    help="versions: Linkerd versions, oldest first (default stable-2.14.1,stable-2.14.2,edge-26.8.3)")
    ap.add_argument("--versions-streams", type=int, default=1000, help="versions: streams of the repeated runs")
    ap.add_argument("--versions-runs", type=int, default=5, help="versions: runs of each version (default 5)")
    ap.add_argument("--versions-redline-max", type=int, default=3200,
                    help="versions: the red-line search's largest load, streams per service (default 3200)")
    ap.add_argument("--versions-redline-repeat", type=int, default=1,
                    help="versions: runs of every red-line step, held when more than half held (default 1)")
    ap.add_argument("--verdict-pairs", type=int, default=20, help="verdicts: comparisons of each kind (default 20)")
    ap.add_argument("--verdict-runs", type=int, default=5, help="verdicts: runs a side (default 5)")
    ap.add_argument("--verdict-delay-ms", type=int, default=50, help="verdicts: the mock's delay (default 50)")
    ap.add_argument("--verdict-threshold", default="5%", help="verdicts: compare --threshold (default 5%%)")
    a = ap.parse_args()
    # SIGTERM/SIGINT and errors unwind through the finally below: no child outlives the harness.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    atexit.register(stop_all)
    try:
        run_benches(ap, a)
    finally:
        stop_all()


def run_benches(ap, a):
    benches = {"capacity": bench_capacity, "fanout": bench_fanout, "churn": bench_churn,
               "controller": bench_controller, "profile-path": bench_profile_path,
               "redline": bench_redline, "storm": bench_storm,
               "burst": bench_burst, "pod-storm": bench_pod_storm,
               "pod-orphans": bench_pod_orphans, "verdicts": bench_verdicts,
               "versions": bench_versions, "mock-peer": bench_mock_peer, "proxy": bench_proxy,
               "policy-names": bench_policy_names}
    for b in a.benches:
        if b not in benches:
            ap.error(f"unknown benchmark '{b}': expected one of {', '.join(benches)}")
    os.makedirs(os.path.join(REPO, "target/bench"), exist_ok=True)
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "dst-load-controller"],
                       cwd=REPO, check=True)
    machine = {"cpus": os.cpu_count(), "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "kernel": os.uname().release, "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                                          if ln.startswith("model name")), "?")}
    results = {"machine": machine, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for b in a.benches:
        print(f"== {b}", flush=True)
        r = benches[b](a)
        results[b] = r
        print(json.dumps(r, indent=2), flush=True)
    out = os.path.join(REPO, "target/bench/results.json")
    json.dump(results, open(out, "w"), indent=2)
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
