#!/usr/bin/env python3
"""Offline checks of Linkerd's real charts against our values.

usage:
  hack/check-linkerd-charts.py keys CHART_DIR VALUES_FILE...
      Every key our values set exists in the chart's values.yaml (a key
      under a map the chart leaves empty, e.g. nodeSelector: {}, is free;
      list items of `controllers` are checked against `controllerDefaults`
      plus `link`). Exit 1 naming each unknown key.
  hack/check-linkerd-charts.py namespace NAMESPACE CLUSTER_KINDS_FILE < IN > OUT
      Sets metadata.namespace to NAMESPACE on namespaced objects of a
      rendered manifest that have none (what `helm install -n` does).
"""
import sys

import yaml


def fail(msg):
    sys.exit(f"[check-linkerd-charts] FAIL: {msg}")


# Lists whose items follow a defaults map in the chart, and extra item keys.
LIST_ITEM_DEFAULTS = {"controllers": ("controllerDefaults", {"link": None})}


def unknown_keys(ours, chart, path=""):
    """The dotted paths of keys in `ours` that `chart` does not have."""
    out = []
    for key, value in ours.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in chart:
            out.append(where)
            continue
        default = chart[key]
        if isinstance(value, dict) and isinstance(default, dict) and default:
            out += unknown_keys(value, default, where)
    return out


def keys(chart_dir, values_files):
    chart = yaml.safe_load(open(f"{chart_dir}/values.yaml")) or {}
    bad = []
    for f in values_files:
        ours = yaml.safe_load(open(f)) or {}
        bad += [f"{f}: {k}" for k in unknown_keys(ours, chart)]
        for name, (defaults, extra) in LIST_ITEM_DEFAULTS.items():
            for i, item in enumerate(ours.get(name) or []):
                allowed = dict(chart.get(defaults) or {}, **extra)
                bad += [f"{f}: {name}[{i}].{k}" for k in unknown_keys(item, allowed)]
    if bad:
        fail(f"keys not in {chart_dir}/values.yaml (a typo, or a value this Linkerd version dropped):\n  "
             + "\n  ".join(bad))
    print(f"  {chart_dir.rstrip('/').split('/')[-1]}: every key of {len(values_files)} values file(s) is the chart's")


def namespace(ns, cluster_kinds_file):
    cluster_kinds = set(open(cluster_kinds_file).read().split())
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    for d in docs:
        if d["kind"] not in cluster_kinds:
            d.setdefault("metadata", {}).setdefault("namespace", ns)
    yaml.safe_dump_all(docs, sys.stdout)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "keys":
        keys(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "namespace":
        namespace(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
