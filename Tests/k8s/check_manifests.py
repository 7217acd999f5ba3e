"""Checks the rendered Kubernetes manifests (Tests/k8s/manifests.sh) for what docs/kubernetes.md
promises, and that the gateway's and the clients' overlay settings agree.
usage: check_manifests.py GATEWAY.yaml CLIENT.yaml; prints ok/not ok lines, exits 1 on a failure."""
import sys

import yaml

failures = 0
count = 0


def check(description, condition):
    global failures, count
    count += 1
    print(("ok" if condition else "not ok") + f" {count} - {description}")
    if not condition:
        failures += 1


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def only(docs, kind, name_prefix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{len(found)} {kind} named {name_prefix}*"
    return found[0]


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


gateway_docs, client_docs = load(sys.argv[1]), load(sys.argv[2])

# --- the gateway ---
deployment = only(gateway_docs, "Deployment")
spec = pod_spec(deployment)
container = only([dict(c, kind="c", metadata={"name": c["name"]}) for c in spec["containers"]], "c", "vpnsup")
env = only(gateway_docs, "ConfigMap", "vpnsup-gateway")["data"]
check("one gateway replica, replaced not rolled (one VPN session at a time)",
      deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate")
check("LAN_IF is the overlay's vxlan link over WAN_IF eth0",
      env.get("LAN_IF") == "vxlan0" and env.get("WAN_IF") == "eth0" and "POD_CIDRS" in env)
check("readiness is `vpnsup health` (TunnelUp), liveness `vpnsup status` (the supervisor answers)",
      container["readinessProbe"]["exec"]["command"][:2] == ["vpnsup", "health"]
      and container["livenessProbe"]["exec"]["command"][:2] == ["vpnsup", "status"])
caps = container["securityContext"]["capabilities"]
check("the gateway container has NET_ADMIN and nothing else", caps == {"drop": ["ALL"], "add": ["NET_ADMIN"]})
check("no privileged container, no privilege escalation, read-only root",
      not container["securityContext"].get("privileged", False)
      and container["securityContext"]["allowPrivilegeEscalation"] is False
      and container["securityContext"]["readOnlyRootFilesystem"] is True)
volumes = {v["name"]: v for v in spec["volumes"]}
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
check("/dev/net/tun from the node as a CharDevice hostPath",
      volumes["tun"]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"} and mounts["tun"] == "/dev/net/tun")
check("the credentials are a Secret mounted 0400 where CREDENTIALS_FILE points",
      "secret" in volumes["credentials"] and volumes["credentials"]["secret"]["defaultMode"] == 0o400
      and env["CREDENTIALS_FILE"].startswith(mounts["credentials"] + "/"))
check("the provider's file is a ConfigMap at CONFIG_DIR",
      "configMap" in volumes["provider"] and mounts["provider"] == env["CONFIG_DIR"])
check("net.ipv4.ip_forward=1 as a pod sysctl",
      {"name": "net.ipv4.ip_forward", "value": "1"} in spec["securityContext"]["sysctls"])
check("no service account token in the pod, and no RBAC objects",
      spec["automountServiceAccountToken"] is False
      and not [d for d in gateway_docs + client_docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")])

service = only(gateway_docs, "Service")
pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
check("the Service is headless, selects the gateway pod and publishes it before it is ready",
      service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
      and all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()))
check("the Service's port is the overlay port (UDP)",
      [(p["port"], p["protocol"]) for p in service["spec"]["ports"]] == [(int(env["OVERLAY_PORT"]), "UDP")])

policy = only(gateway_docs, "NetworkPolicy")
rules = policy["spec"]["ingress"]
check("the NetworkPolicy selects the gateway pod and admits only the overlay port",
      all(pod_labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
      and policy["spec"]["policyTypes"] == ["Ingress"] and len(rules) == 1
      and rules[0]["ports"] == [{"protocol": "UDP", "port": int(env["OVERLAY_PORT"])}])
peer = rules[0]["from"]
check("... from opted-in pods of any namespace only",
      peer == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"vpnsup.io/gateway": deployment["metadata"]["name"]}}}])

# --- the clients ---
workloads = [d for d in client_docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
check("the example has opted-in workloads (a Deployment and a Job)",
      sorted(d["kind"] for d in workloads) == ["Deployment", "Job"])
join = only(client_docs, "ConfigMap", "vpnsup-join")["data"]
for workload in workloads:
    name = f'{workload["kind"]} {workload["metadata"]["name"]}'
    spec = pod_spec(workload)
    sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "vpnsup-join"]
    check(f"{name}: the vpnsup join sidecar is a restartable init container, first",
          len(sidecars) == 1 and spec["initContainers"][0] is sidecars[0] and sidecars[0].get("restartPolicy") == "Always"
          and sidecars[0]["command"] == ["vpnsup", "join"])
    sidecar = sidecars[0] if sidecars else {}
    check(f"{name}: its pod starts once the sidecar's startup probe passes",
          sidecar.get("startupProbe", {}).get("exec", {}).get("command", [])[:2] == ["vpnsup", "health"])
    check(f"{name}: the sidecar reads the vpnsup-join ConfigMap",
          [e["configMapRef"]["name"] for e in sidecar.get("envFrom", [])] == [only(client_docs, "ConfigMap", "vpnsup-join")["metadata"]["name"]])
    check(f"{name}: the pod carries the label the gateway's NetworkPolicy admits",
          workload["spec"]["template"]["metadata"]["labels"].get("vpnsup.io/gateway") == deployment["metadata"]["name"])
    others = [c for c in spec["containers"] + spec.get("initContainers", []) if c is not sidecar]
    check(f"{name}: only the sidecar holds capabilities",
          all(not c.get("securityContext", {}).get("capabilities", {}).get("add") for c in others)
          and sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_BIND_SERVICE"]})

gateway_namespace = deployment["metadata"]["namespace"]
check("GATEWAY is the gateway Service's cluster name",
      join["GATEWAY"] == f'{service["metadata"]["name"]}.{gateway_namespace}.svc.cluster.local')
check("GATEWAY_ADDR is the gateway's IP_ADDR", join["GATEWAY_ADDR"] == env["IP_ADDR"])
check("both ends agree on POD_CIDRS, OVERLAY_VNI and OVERLAY_PORT",
      all(join[k] == env[k] for k in ("POD_CIDRS", "OVERLAY_VNI", "OVERLAY_PORT")))

print(f"# {count} checks, {failures} failed")
sys.exit(1 if failures else 0)
