"""Prints the data of a ConfigMap of rendered manifests as VAR=value lines, sorted: the
environment the manifests give vpnsup (lab/k8s-sim.sh runs the binaries with it).
usage: manifest_env.py RENDERED.yaml CONFIGMAP-NAME (a generated name's prefix: vpnsup-join
matches vpnsup-join-5c8f...); exits 1 unless exactly one ConfigMap matches."""
import sys

import yaml

path, name = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    maps = [d for d in yaml.safe_load_all(f)
            if d and d.get("kind") == "ConfigMap"
            and (d["metadata"]["name"] == name or d["metadata"]["name"].startswith(name + "-"))]
if len(maps) != 1:
    sys.exit(f"{path}: {len(maps)} ConfigMaps named {name}")
for key, value in sorted(maps[0].get("data", {}).items()):
    if "\n" in str(value):
        sys.exit(f"{path}: {name}.{key} spans lines")
    print(f"{key}={value}")
