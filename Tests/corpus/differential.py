#!/usr/bin/env python3
"""Differential test of vpnsup's reading of OpenVPN configurations against OpenVPN 2.6 itself.

For every file given (or found under the directories given):

1. `vpnsup check` (as root): vpnsup's vetting and remote plan, then OpenVPN's own check of the
   vetted text (options, files, keys) in a network namespace without network.
2. OpenVPN on the raw file, as `nobody`, in a network and PID namespace of its own, at --verb 4,
   stopped at its version line: the connection profiles it built (remote, port, proto), or the
   error that stopped it. Options OpenVPN 2.6 removed or knows only on Windows are made warnings
   with --ignore-unknown-option so that the rest of the file is still compared.

A file agrees when vpnsup's remotes (host, port, protocol, in order, skipped ones included) are
OpenVPN's profiles, when OpenVPN accepts the vetted text whenever vpnsup does not refuse the
file, and when every error OpenVPN reports on the raw file is one vpnsup predicted (the option
is dropped, translated or refused by the vetting). Prints one line per disagreement and a
summary; exits 1 if any file disagrees.

    differential.py [--vpnsup PATH] [--openvpn PATH] [--jobs N] [--summary-json FILE] PATH...
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading

REMOVED_OR_WINDOWS = [
    # removed from OpenVPN by 2.6 (see docs/configuration.md)
    "ncp-disable", "keysize", "no-iv", "key-method", "tls-remote", "ifconfig-pool-linear", "prng", "inetd",
    "threads", "nice-work", "http-proxy-fallback", "auto-proxy", "show-proxy-settings",
    # Windows only
    "block-outside-dns", "register-dns", "ip-win32", "tap-sleep", "dhcp-renew", "dhcp-pre-release", "dhcp-release",
    "win-sys", "service", "pause-exit", "windows-driver", "show-net-up", "cryptoapicert", "iproute", "setcon",
]

WORD = r'("(?:[^"\\]|\\.)*"|\S+)'
PLAN_LINE = re.compile(r"^  remote " + WORD + " " + WORD + r" (\S+) \(line \d+\): (pinned|resolved|skipped)")


def unquoted(word):
    """A word as vpnsup writes it (OpenVPNConfigSyntax.quoted), read back."""
    if word.startswith('"'):
        return re.sub(r'\\(.)', r'\1', word[1:-1])
    return word
FINDING_LINE = re.compile(r"^  (notice|warning|error): line (\d+): (.*?): (dropped|translated to|refused)")
PAST_KEYS = ("RESOLVE: ", "TCP/UDP: ", "Socket Buffers:", "Attempting to establish TCP connection", "UDPv4 link",
             "UDPv6 link", "UDP link", "Could not determine IPv4/IPv6 protocol", "Initialization Sequence Completed")
UNKNOWN = re.compile(r"Unrecognized option or missing or extra parameter\(s\) in .*?:(\d+): (\S+) \(")


def end_namespace(process):
    """Ends `unshare --pid --fork` and everything in its PID namespace: SIGKILL to its child, the
    namespace's init, takes every process in it along (a daemonized OpenVPN included; setpriv's
    uid change clears --kill-child's parent-death signal, so killing unshare alone would not)."""
    try:
        with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass


def run_until(argv, stop, timeout=20):
    """Runs argv (unshare --pid --fork ...), reading its output lines until stop(line) or the
    end; returns (lines, stopped)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout, end_namespace, [process])  # a bound on a hang only
    timer.start()
    lines, stopped = [], False
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if stop(line):
                stopped = True
                end_namespace(process)
                break
        process.stdout.close()
        process.wait()
    finally:
        timer.cancel()
    return lines, stopped


def message(line):
    line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line)
    return re.sub(r"^us=\d+ ", "", line)


CREDENTIALS = None


def placeholder_credentials():
    """A username/password file nobody can read (OpenVPN asks for them before it loads its keys)."""
    global CREDENTIALS
    if CREDENTIALS is None:
        import tempfile
        directory = tempfile.mkdtemp(prefix="vpnsup-corpus-")
        os.chmod(directory, 0o755)
        CREDENTIALS = os.path.join(directory, "credentials")
        with open(CREDENTIALS, "w") as f:
            f.write("corpus\ncorpus\n")
        os.chmod(CREDENTIALS, 0o644)
    return CREDENTIALS


def openvpn_raw(path, openvpn):
    """OpenVPN's profiles of the raw file, or its error."""
    ignore = []
    for start in range(0, len(REMOVED_OR_WINDOWS), 15):
        ignore += ["--ignore-unknown-option"] + REMOVED_OR_WINDOWS[start:start + 15]
    argv = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--",
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
            openvpn] + ignore + ["--cd", os.path.dirname(os.path.abspath(path)), "--config", os.path.abspath(path),
                                 "--verb", "4", "--dev", "tun0", "--dev-type", "tun", "--auth-user-pass", placeholder_credentials()]
    # As vpnsup check stops it: once it turns to the network, its keys are loaded.
    lines, stopped = run_until(argv, lambda l: message(l).startswith(PAST_KEYS))
    texts = [message(l) for l in lines]
    parsed = any(t.startswith("Connection profiles END") for t in texts)
    profiles, current = [], None
    for text in texts:
        if text.startswith("Connection profiles [") and text.endswith("]:"):
            current = {}
            profiles.append(current)
        elif text.startswith("Connection profiles END"):
            current = None
        elif current is not None:
            m = re.match(r"^  (proto|remote|remote_port) = '?(.*?)'?$", text)
            if m:
                current[m.group(1)] = m.group(2)
    warnings = [m.group(2) for m in (UNKNOWN.search(t) for t in texts) if m]
    error = None
    if not stopped:
        errors = [t for t in texts if "Options error:" in t and "Please correct" not in t]
        error = errors[0] if errors else next((t for t in reversed(texts) if t and not t.startswith(("Exiting", "OpenSSL: "))), "no output")
    remotes = [(p.get("remote", ""), p.get("remote_port", ""), p.get("proto", "")) for p in profiles if p.get("remote") != "[UNDEF]"]
    return {"parsed": parsed, "keys_loaded": stopped, "remotes": remotes, "error": error, "unknown": warnings}


def vpnsup_check(path, vpnsup):
    environment = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "IP_ADDR": "172.22.0.1/24",
                   "CONFIG": os.path.abspath(path)}
    result = subprocess.run([vpnsup, "check"], capture_output=True, env=environment, timeout=60)
    out = result.stdout.decode("utf-8", "replace").splitlines()
    err = result.stderr.decode("utf-8", "replace").strip()
    remotes = [(unquoted(m.group(1)), unquoted(m.group(2)), m.group(3)) for m in (PLAN_LINE.match(l) for l in out) if m]
    findings = [(int(m.group(2)), m.group(3), m.group(4)) for m in (FINDING_LINE.match(l) for l in out) if m]
    # A refusal by the vetting or the plan names CONFIG=path:line or "has no usable remote";
    # OpenVPN's own verdict on the vetted text says "OpenVPN".
    openvpn_refused = result.returncode == 78 and ": OpenVPN " in err
    vpnsup_refused = result.returncode == 78 and not openvpn_refused
    return {"status": result.returncode, "remotes": remotes, "findings": findings, "error": err,
            "refused": vpnsup_refused, "openvpn_refused": openvpn_refused}


def names_in(findings):
    names = set()
    for _, directive, _ in findings:
        words = directive.split(" ")
        if words[:2] == ["setenv", "opt"] and len(words) > 2:
            words = words[2:]
        names.add(words[0].lstrip("<").rstrip(">"))
    return names


def compare(path, vpnsup, openvpn):
    """The verdicts of both, and what is wrong between them (nothing when they agree).

    Agreement: (a) OpenVPN reads the raw file and vpnsup's remotes are OpenVPN's, and OpenVPN
    accepts the vetted text; (b) OpenVPN stops on the raw file and vpnsup refuses it, or fixed the
    line (dropped or translated it) so that OpenVPN accepts the vetted text; (c) OpenVPN stops on
    the vetted text exactly as on the raw file (an unknown option, a key it cannot load), which
    `vpnsup check` and `run` report as OpenVPN's error. vpnsup refusing a file OpenVPN would run
    (dev tap, a proxy) is by design: counted, not a disagreement."""
    v = vpnsup_check(path, vpnsup)
    o = openvpn_raw(path, openvpn)
    problems = []
    if o["parsed"] and not v["refused"]:
        if [tuple(r) for r in v["remotes"]] != [tuple(r) for r in o["remotes"]]:
            problems.append(f"remotes differ: vpnsup {v['remotes']} OpenVPN {o['remotes']}")
    if v["openvpn_refused"]:
        raw_error = (o["error"] or "").split(" (OpenSSL")[0]
        same = raw_error and (raw_error in v["error"] or raw_error.replace(os.path.abspath(path), "") in v["error"])
        if not same:
            problems.append(f"OpenVPN refuses the vetted text: {v['error']} (raw file: {o['error'] or 'accepted'})")
    return {"path": path, "vpnsup": v, "openvpn": o, "problems": problems}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vpnsup", default=".build/debug/vpnsup")
    parser.add_argument("--openvpn", default="/usr/sbin/openvpn")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--summary-json")
    parser.add_argument("--quiet", action="store_true", help="print disagreements only")
    parser.add_argument("paths", nargs="+")
    arguments = parser.parse_args()
    files = []
    for path in arguments.paths:
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith((".ovpn", ".conf"))]
        else:
            files.append(path)
    files.sort()
    placeholder_credentials()
    try:
        with concurrent.futures.ThreadPoolExecutor(arguments.jobs) as pool:
            results = list(pool.map(lambda f: compare(f, arguments.vpnsup, arguments.openvpn), files))
    finally:
        os.unlink(CREDENTIALS)
        os.rmdir(os.path.dirname(CREDENTIALS))
    counts = {"files": len(results), "agree": 0, "disagree": 0, "remotes_compared": 0, "openvpn_parsed_raw": 0,
              "vpnsup_refused": 0, "openvpn_accepted_vetted": 0, "openvpn_refused_vetted": 0, "findings": 0}
    refusals, reasons = {}, {}
    for r in results:
        v, o = r["vpnsup"], r["openvpn"]
        counts["openvpn_parsed_raw"] += o["parsed"]
        counts["openvpn_loaded_raw_keys"] = counts.get("openvpn_loaded_raw_keys", 0) + o["keys_loaded"]
        counts["remotes_compared"] += o["parsed"] and not v["refused"]
        counts["vpnsup_refused"] += v["refused"]
        counts["openvpn_accepted_vetted"] += v["status"] == 0
        counts["openvpn_refused_vetted"] += v["openvpn_refused"]
        counts["findings"] += len(v["findings"])
        if v["refused"]:
            key = re.sub(r"^CONFIG=\S+?(:\d+)?: ", "", v["error"])[:90]
            refusals[key] = refusals.get(key, 0) + 1
        for _, directive, action in v["findings"]:
            key = f"{directive.split(' ')[0]} {action}"
            reasons[key] = reasons.get(key, 0) + 1
        if r["problems"]:
            counts["disagree"] += 1
            for p in r["problems"]:
                print(f"DISAGREE {r['path']}: {p}")
        else:
            counts["agree"] += 1
            if not arguments.quiet:
                print(f"agree    {r['path']}")
    print(f"{counts['files']} files: {counts['agree']} agree, {counts['disagree']} disagree; "
          f"remotes compared in {counts['remotes_compared']} (OpenVPN parsed {counts['openvpn_parsed_raw']} raw files), "
          f"vpnsup refused {counts['vpnsup_refused']}, OpenVPN accepted the vetted text of {counts['openvpn_accepted_vetted']} "
          f"and refused {counts['openvpn_refused_vetted']}")
    if arguments.summary_json:
        with open(arguments.summary_json, "w") as f:
            json.dump({"counts": counts, "refusals": refusals, "findings": reasons}, f, indent=1, sort_keys=True)
    print(f"{counts['agree']} passed, {counts['disagree']} failed")
    return 1 if counts["disagree"] else 0


if __name__ == "__main__":
    sys.exit(main())
