#!/usr/bin/env python3
"""Checks helmfile.yaml offline: it and every values file parse, every file
they name exists, every chart is pinned, and helmfile itself renders each
environment's releases and values as intended (no chart is fetched).

usage: hack/check-helmfile.py REPO CA_DIR HELMFILE
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

def fail(msg):
    sys.exit(f"[check-helmfile] FAIL: {msg}")


def main():
    repo, ca_dir, helmfile = sys.argv[1:4]
    os.chdir(repo)

    # 1. Parse helmfile.yaml and every plain values file; every referenced file exists.
    docs = [d for d in yaml.safe_load_all(open("helmfile.yaml")) if d]
    envs = docs[0]["environments"]
    releases = [r for d in docs for r in d.get("releases", [])]
    referenced = set()
    for env in envs.values():
        referenced.update(v for v in env.get("values", []) if isinstance(v, str))
    for r in releases:
        referenced.update(v for v in r.get("values", []) if isinstance(v, str))
        if r["chart"].startswith("./"):
            referenced.add(os.path.join(r["chart"][2:], "Chart.yaml"))
        else:
            if not r.get("version"):
                fail(f"release {r['name']}: chart {r['chart']} is not pinned to a version")
    for path in sorted(referenced):
        if not os.path.isfile(path):
            fail(f"{path} is referenced by helmfile.yaml but does not exist")
    for path in glob.glob("values/*.yaml") + glob.glob("charts/*/scenarios/*.yaml"):
        yaml.safe_load(open(path))
    for path in glob.glob("dashboards/*.json"):
        json.load(open(path))
    print(f"  helmfile.yaml: {len(envs)} environments, {len(releases)} releases, {len(referenced)} referenced files present")

    def hf(*args, check=True, ca=ca_dir):
        e = dict(os.environ, LINKERD_CA_DIR=ca, HELMFILE_DISABLE_INSIGHTS="true")
        p = subprocess.run([helmfile, "--file", "helmfile.yaml", *args], env=e, capture_output=True, text=True)
        if check and p.returncode != 0:
            fail(f"helmfile {' '.join(args)}: {p.stderr.strip()[-2000:]}")
        return p

    # 2. Which releases each environment and state value enables.
    def enabled(*args):
        out = hf(*args, "list", "--output", "json").stdout
        return {r["name"] for r in json.loads(out) if r.get("enabled", True) is True}

    base = {"kwok", "kwok-stage-fast", "linkerd-crds", "linkerd-control-plane"}
    cases = [
        ((), base),
        (("--state-values-set", "monitoring.enabled=true"), base | {"kube-prometheus-stack"}),
        (("--state-values-set", "loadTest.enabled=true"), base | {"dst-load-test"}),
        (("-e", "multicluster-source"), base | {"linkerd-multicluster"}),
        (("-e", "multicluster-target"), base | {"linkerd-multicluster"}),
    ]
    for args, want in cases:
        got = enabled(*args)
        if got != want:
            fail(f"helmfile {' '.join(args) or '(default)'} list: enabled {sorted(got)}, expected {sorted(want)}")
        print(f"  {' '.join(args) or 'default':45} {len(got)} releases enabled as expected")

    # 3. Every release's values rendered by helmfile.
    def values(*args, ca=ca_dir, check=True):
        with tempfile.TemporaryDirectory() as out:
            p = hf(*args, "write-values", "--skip-deps", "--output-file-template",
                   out + "/{{ .Release.Name }}.yaml", ca=ca, check=check)
            if not check:
                return p
            return {os.path.basename(f)[:-5]: yaml.safe_load(open(f)) or {} for f in glob.glob(out + "/*.yaml")}

    all_on = ("--state-values-set", "monitoring.enabled=true", "--state-values-set", "loadTest.enabled=true")
    v = values(*all_on, "--state-values-set", "scenario=red-line")
    if v.get("linkerd-crds", {}).get("installGatewayAPI") is not True:
        fail("linkerd-crds: installGatewayAPI is not true (linkerd check needs the Gateway API CRDs)")
    cp = v["linkerd-control-plane"]
    if cp["identityTrustAnchorsPEM"].strip() != open(f"{ca_dir}/ca.crt").read().strip():
        fail("linkerd-control-plane: identityTrustAnchorsPEM is not LINKERD_CA_DIR/ca.crt")
    tls = cp["identity"]["issuer"]["tls"]
    if tls["crtPEM"].strip() != open(f"{ca_dir}/issuer.crt").read().strip() or \
            tls["keyPEM"].strip() != open(f"{ca_dir}/issuer.key").read().strip():
        fail("linkerd-control-plane: issuer certificate or key not from LINKERD_CA_DIR")
    if v["dst-load-test"]["client"]["replicas"] != 25:
        fail(f"scenario red-line not applied: {v['dst-load-test']}")
    dash = v["kube-prometheus-stack"]["grafana"]["dashboards"]["dst-load"]
    for name, d in dash.items():
        if json.loads(d["json"])["uid"] != name:
            fail(f"dashboard {name} provisioned with the wrong JSON")
    if len(dash) != len(glob.glob("dashboards/*.json")):
        fail(f"{len(dash)} dashboards provisioned, {len(glob.glob('dashboards/*.json'))} in dashboards/")
    if "runAsRoot" in json.dumps(cp.get("proxyInit", {})):
        fail("linkerd-control-plane: proxyInit.runAsRoot is for Docker-runtime nodes; k3d runs containerd")
    print(f"  values: Linkerd identity from {ca_dir}, scenario red-line, {len(dash)} dashboards provisioned")

    for role in ("source", "target"):
        mc = values("-e", f"multicluster-{role}")["linkerd-multicluster"]
        want = open(f"values/linkerd-multicluster-{role}.yaml").read()
        if mc != yaml.safe_load(want)["multicluster"]["chartValues"]:
            fail(f"multicluster-{role}: chart values differ from values/linkerd-multicluster-{role}.yaml")
    print("  multicluster: each environment's chart values come from its file")
    # The load test's halves: churn exports in the target, clients watch in the source.
    lt = ("--state-values-set", "loadTest.enabled=true", "--state-values-set", "scenario=small-oscillation")
    tgt = values("-e", "multicluster-target", *lt)
    src = values("-e", "multicluster-source", *lt)
    if tgt["dst-load-test"]["churn"]["args"].get("export") != "remote-discovery" or \
            tgt["dst-load-test"]["client"].get("enabled") is not False:
        fail(f"multicluster-target: churn must export for remote discovery and run no clients: {tgt['dst-load-test']}")
    if src["dst-load-test"]["churn"].get("enabled") is not False or \
            src["dst-load-test"]["client"].get("groundTruth") is not False:
        fail(f"multicluster-source: clients only, without local ground truth: {src['dst-load-test']}")
    if tgt["dst-load-test"]["churn"]["args"].get("oscillate-services") != 10:
        fail("multicluster-target: the scenario's values were lost")
    links = [c["link"]["ref"]["name"] for c in src["linkerd-multicluster"]["controllers"]]
    if links != ["target"] or tgt["linkerd-multicluster"]["remoteMirrorServiceAccount"] is not True:
        fail(f"the source must follow a Link named target ({links}), the target must grant remote access")
    if values("--state-values-set", "loadTest.enabled=true")["dst-load-test"].get("churn", {}).get("enabled") is False:
        fail("outside multicluster, the multicluster values must not apply")
    print("  multicluster load: churn exports in the target, clients in the source follow the Link named target")

    # 4. Clear errors for bad input.
    p = values(*all_on, "--state-values-set", "scenario=huge", check=False)
    if p.returncode == 0 or 'unknown scenario "huge"' not in p.stderr:
        fail(f"an unknown scenario was not refused clearly: {p.stderr[-500:]}")
    with tempfile.TemporaryDirectory() as empty:
        p = values(ca=empty, check=False)
        if p.returncode == 0 or "run hack/gen-certs.sh" not in p.stderr:
            fail(f"missing certificates were not refused clearly: {p.stderr[-500:]}")
    print("  bad input: unknown scenario and missing certificates refused with the fix named")

    readme_scenarios()

    # 5. Sync order, through helmfile's own plan: a stand-in helm records the
    # releases it is asked to install (no cluster, no chart fetched).
    for args, before in [
        (all_on, [("kube-prometheus-stack", "dst-load-test"), ("linkerd-control-plane", "dst-load-test"),
                  ("linkerd-crds", "linkerd-control-plane")]),
        (("--state-values-set", "loadTest.enabled=true"), [("linkerd-control-plane", "dst-load-test")]),
    ]:
        order = synced(hf, args)
        for first, then in before:
            if first not in order or then not in order or order.index(first) > order.index(then):
                fail(f"helmfile {' '.join(args)} sync: {first} is not installed before {then}: {order}")
        print(f"  sync {' '.join(args)}: {len(order)} releases, in dependency order")
    dag = {line.split()[1]: line.split()[2:] for line in hf("show-dag").stdout.splitlines()[1:] if line.strip()}
    needs = [n.rstrip(",") for n in dag.get("dst-load-test/dst-load-test", [])]
    if "monitoring/kube-prometheus-stack" not in needs:
        fail(f"dst-load-test does not need kube-prometheus-stack (its PodMonitors need the CRD first): {needs}")
    if "kube-prometheus-stack" in order:
        fail("kube-prometheus-stack synced with monitoring disabled")
    pm = values(*all_on)["dst-load-test"].get("podMonitor", {})
    if pm.get("force") is not True:
        fail(f"with monitoring enabled, the chart is not told to render its PodMonitors regardless: {pm}")
    if values("--state-values-set", "loadTest.enabled=true")["dst-load-test"]["podMonitor"]["force"] is not False:
        fail("without monitoring, the chart is told to render PodMonitors regardless")
    print("  PodMonitors: forced with monitoring enabled, left to the CRD check without")


def cpu(q):
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def gib(q):
    return int(q[:-2]) / 1024 if q.endswith("Mi") else float(q[:-2])


def number(x):
    return f"{x:g}" if x < 1000 else f"{x:,.0f}"


def expanded(targets):
    """How many authorities a --target-services list names (brace ranges expanded)."""
    total = 0
    for item in targets.split(","):
        n = 1
        for lo, hi in re.findall(r"\{(\d+)\.\.(\d+)\}", item):
            n *= int(hi) - int(lo) + 1
        total += n
    return total


def readme_scenarios():
    """The README's table of what each scenario asks, against the scenario files."""
    base = yaml.safe_load(open("charts/dst-load-test/values.yaml"))
    rows = {}
    for line in open("README.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells[1:]
    files = sorted(os.path.basename(f)[:-5] for f in glob.glob("charts/dst-load-test/scenarios/*.yaml"))
    if sorted(rows) != files:
        fail(f"README scenario table lists {sorted(rows)}, scenarios are {files}")
    for name in files:
        sc = yaml.safe_load(open(f"charts/dst-load-test/scenarios/{name}.yaml"))
        client = dict(base["client"], **sc.get("client", {}))
        churn = dict(base["churn"]["args"], **sc["churn"]["args"])
        n, res = client["replicas"], client["resources"]
        # --streams-per-service is per client process and per authority
        # watched: every Service churn makes, or the listed targetServices.
        services = sum(churn.get(f"{p}-services", 0)
                       for p in ("stable", "oscillate", "restart", "ephemeral", "statefulset"))
        authorities = expanded(client["targetServices"]) if client.get("targetServices") else services
        streams = n * client["args"]["streams-per-service"] * authorities
        # A roll surges by maxSurge (25% by default, rounded up) above the count.
        surge = int(str(churn.get("restart-max-surge", "25%")).rstrip("%"))
        restart_peak = churn.get("restart-endpoints", 1)
        restart_peak += -(-restart_peak * surge // 100) if "%" in str(churn.get("restart-max-surge", "25%")) else surge
        peak = churn.get("stable-services", 0) * churn.get("stable-endpoints", 0) + \
            churn.get("oscillate-services", 0) * churn.get("oscillate-max-endpoints", 0) + \
            churn.get("restart-services", 0) * restart_peak + \
            churn.get("ephemeral-services", 0) * churn.get("ephemeral-endpoints", 0) + \
            churn.get("statefulset-services", 0) * churn.get(
                "statefulset-max-replicas", churn.get("statefulset-replicas", 1))
        c = number(n * cpu(res["requests"]["cpu"]))
        want = [str(n), f"{streams:,}", f"{peak:,}", f"{c} CPU" + ("" if c == "1" else "s"),
                f"{number(n * gib(res['requests']['memory']))} GiB / {number(n * gib(res['limits']['memory']))} GiB"]
        if rows[name] != want:
            fail(f"README scenario table, {name}: {rows[name]}; the scenario files say {want}")
    print(f"  README: the resources of {len(files)} scenarios match their files")


STAND_IN_HELM = """#!/bin/sh
# Records `helm upgrade --install RELEASE ...`; everything else is the real helm.
if [ "$1" = upgrade ]; then echo "$3" >>"$STAND_IN_LOG"; exit 0; fi
exec "$REAL_HELM" "$@"
"""


def synced(hf, args):
    """The releases `helmfile sync` installs, in the order it installs them."""
    with tempfile.TemporaryDirectory() as d:
        helm = os.path.join(d, "helm")
        with open(helm, "w") as f:
            f.write(STAND_IN_HELM)
        os.chmod(helm, 0o755)
        log = os.path.join(d, "log")
        os.environ.update(STAND_IN_LOG=log, REAL_HELM=shutil.which("helm"), KUBECONFIG=os.path.join(d, "none"))
        try:
            hf("--helm-binary", helm, *args, "sync", "--skip-deps", "--concurrency", "1")
        finally:
            for k in ("STAND_IN_LOG", "REAL_HELM", "KUBECONFIG"):
                os.environ.pop(k, None)
        return open(log).read().split() if os.path.exists(log) else []


if __name__ == "__main__":
    main()
