#!/usr/bin/env python3
"""Kernel-side timing for the benchmarks: listens on the nftables notification group
(NETLINK_NETFILTER, NFNLGRP_NFTABLES) and rtnetlink link events of the namespace it runs in, and
stamps every committed nftables transaction (NFT_MSG_NEWGEN closes each one) with CLOCK_MONOTONIC
at its receipt. Blocking reads, no polling: the stamp is a wake-up after the kernel's commit.

  nlwatch.py spawn --runs N --kind oneshot|daemon [--setup SH] [--cleanup SH] [--log FILE] -- CMD...
      per run: t0 just before posix_spawn(CMD); prints one JSON line per run with the times (ms
      after t0) of the first and last transaction, and for a daemon (vpnsup) of the first
      transaction with an `egress` chain (the connecting ruleset); a daemon gets SIGTERM then.
      --kind plain: no commit expected, only the time to exit.
  nlwatch.py react --event kill-openvpn|reconnect|flush|tun-del --vpnsup-pid PID --runtime DIR --runs N
      per run: waits for TunnelUp, makes the event, prints the times from the event (kernel
      evidence where there is any) to vpnsup's next commit, to its state leaving TunnelUp and to
      TunnelUp again.
"""
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
MSG_NEWTABLE, MSG_DELTABLE, MSG_NEWCHAIN, MSG_NEWRULE, MSG_NEWGEN = 0, 2, 3, 6, 15
RTMGRP_LINK = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17
IFLA_IFNAME = 3
SO_RCVBUFFORCE = 33


def now_ms():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) / 1e6


def attributes(data, offset, end):
    """Yields (type, payload) of the netlink attributes in data[offset:end]."""
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def cstring(payload):
    return payload.split(b"\0", 1)[0].decode(errors="replace")


class Watch:
    """One socket on the nftables group, one on rtnetlink link events; transactions assembled."""

    def __init__(self):
        self.nft = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        # A 10,000-forward commit announces every map element: a large buffer, so none is lost.
        self.nft.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.nft.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        self.link = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.link.bind((0, RTMGRP_LINK))
        self.pending = {"chains": set(), "rules": 0, "tables": set(), "deleted": 0}
        self.transactions = []  # dicts: t (ms), comm, pid, chains, rules, deleted
        self.links = []  # (t, "new"|"del", ifname)
        self.buffer = bytearray(1 << 20)

    def read(self, timeout):
        """Reads what arrives within timeout seconds (None: block until something does)."""
        readable, _, _ = select.select([self.nft, self.link], [], [], timeout)
        for sock in readable:
            count = sock.recv_into(self.buffer)
            stamp = now_ms()
            data = memoryview(self.buffer)[:count]
            if sock is self.nft:
                self._nft(bytes(data), stamp)
            else:
                self._link(bytes(data), stamp)
        return bool(readable)

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.read(left)

    def _messages(self, data):
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                return
            yield kind, offset, offset + length
            offset += (length + 3) & ~3

    def _nft(self, data, stamp):
        for kind, start, end in self._messages(data):
            if kind >> 8 != NFNL_SUBSYS_NFTABLES:
                continue
            message, body = kind & 0xFF, start + 16 + 4  # nlmsghdr, nfgenmsg
            if message == MSG_NEWCHAIN:
                for attr, payload in attributes(data, body, end):
                    if attr == 3:  # NFTA_CHAIN_NAME
                        self.pending["chains"].add(cstring(payload))
            elif message == MSG_NEWTABLE:
                for attr, payload in attributes(data, body, end):
                    if attr == 1:  # NFTA_TABLE_NAME
                        self.pending["tables"].add(cstring(payload))
            elif message == MSG_NEWRULE:
                self.pending["rules"] += 1
            elif message in (MSG_DELTABLE, 5, 8):
                self.pending["deleted"] += 1
            elif message == MSG_NEWGEN:
                comm, pid = "", 0
                for attr, payload in attributes(data, body, end):
                    if attr == 2:  # NFTA_GEN_PROC_PID
                        pid = struct.unpack(">I", payload[:4])[0]
                    elif attr == 3:  # NFTA_GEN_PROC_NAME
                        comm = cstring(payload)
                p = self.pending
                self.transactions.append({"t": stamp, "comm": comm, "pid": pid, "chains": sorted(p["chains"]),
                                          "tables": sorted(p["tables"]), "rules": p["rules"], "deleted": p["deleted"]})
                self.pending = {"chains": set(), "rules": 0, "tables": set(), "deleted": 0}

    def _link(self, data, stamp):
        for kind, start, end in self._messages(data):
            if kind not in (RTM_NEWLINK, RTM_DELLINK):
                continue
            for attr, payload in attributes(data, start + 16 + 16, end):  # nlmsghdr, ifinfomsg
                if attr == IFLA_IFNAME:
                    self.links.append((stamp, "del" if kind == RTM_DELLINK else "new", cstring(payload)))


def shell(command):
    if command:
        subprocess.run(["bash", "-c", command], check=True)


def spawn(args):
    watch = Watch()
    for run in range(args.runs):
        shell(args.setup)
        watch.drain(0.05)
        watch.transactions.clear()
        t0 = now_ms()
        # The command's output goes to a file: OpenVPN, vpnsup's child, would write into ours.
        output = [(os.POSIX_SPAWN_OPEN, 1, args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
                  (os.POSIX_SPAWN_DUP2, 1, 2)]
        pid = os.posix_spawn(args.command[0], args.command, os.environ, file_actions=output)
        result = {"run": run}
        if args.kind == "plain":
            # No commit expected: the time a process takes to start and exit (a floor for the rest).
            os.waitpid(pid, 0)
            print(json.dumps({"run": run, "exit": now_ms() - t0}), flush=True)
            shell(args.cleanup)
            continue
        if args.kind == "oneshot":
            # Read while it runs (the stamps must be taken as notifications arrive).
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                watch.read(0.002)
            watch.drain(0.1)
            if status != 0:
                sys.exit(f"nlwatch: {args.command} failed ({status})")
        else:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any("egress" in t["chains"] for t in watch.transactions):
                watch.read(0.5)
            os.kill(pid, signal.SIGTERM)
            while not os.waitpid(pid, os.WNOHANG)[0]:
                watch.read(0.01)
        own = [t for t in watch.transactions if t["t"] >= t0]
        if not own:
            sys.exit("nlwatch: no nftables transaction seen")
        result["first"] = own[0]["t"] - t0
        result["last"] = own[-1]["t"] - t0 if args.kind == "oneshot" else None
        result["transactions"] = len(own) if args.kind == "oneshot" else None
        connecting = [t for t in own if "egress" in t["chains"]]
        result["connecting"] = connecting[0]["t"] - t0 if connecting else None
        print(json.dumps(result), flush=True)
        shell(args.cleanup)


def children(pid):
    """Pids whose parent is pid (from /proc: no name matching)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError):
                pass
    return found


def status_snapshot(path):
    """vpnsup's status (one JSON snapshot per connection to its status socket), or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(path)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None


def status_state(path):
    snapshot = status_snapshot(path)
    return snapshot.get("state") if snapshot else None


def transition_ms(transitions, after_ms, event=None, to=None):
    """Wall-clock ms of the first transition at or after `after_ms` (ms precision, so 1 ms of
    slack) matching `event`/`to`, or None."""
    from datetime import datetime
    for t in transitions:
        at = datetime.fromisoformat(t["at"].replace("Z", "+00:00")).timestamp() * 1000
        if at >= after_ms - 1 and (event is None or t["event"] == event) and (to is None or t["to"] == to):
            return at
    return None


def react(args):
    """Per run: TunnelUp and idle; the event; then, read as they come, vpnsup's first commit
    (nftables notification stamped with vpnsup's pid), the state leaving TunnelUp (status socket,
    polled every millisecond) and TunnelUp again (polled every 20 ms)."""
    watch = Watch()
    status = args.runtime + "/status.sock"
    for run in range(args.runs):
        deadline = time.monotonic() + 60
        while status_state(status) != "TunnelUp":
            if time.monotonic() > deadline:
                sys.exit("nlwatch: the router did not come back to TunnelUp within 60 s")
            time.sleep(0.05)
        time.sleep(args.pause)  # let OpenVPN's and vpnsup's start-up chatter end
        watch.drain(0.05)
        watch.transactions.clear()
        watch.links.clear()
        openvpn = children(args.vpnsup_pid)
        if args.event in ("kill-openvpn", "reconnect") and not openvpn:
            sys.exit("nlwatch: vpnsup has no OpenVPN child")
        # A pidfd turns readable when the process has exited: the moment the kernel sends vpnsup
        # its SIGCHLD, which comes only once the dead OpenVPN's files are closed (tun0's teardown).
        exit_fds = [os.pidfd_open(pid) for pid in openvpn] if args.event == "kill-openvpn" else []
        exited = None
        t_event = t_before = now_ms()
        t_wall = time.time() * 1000
        if args.event == "kill-openvpn":
            for pid in openvpn:
                os.kill(pid, signal.SIGKILL)
        elif args.event == "reconnect":
            for pid in openvpn:
                os.kill(pid, signal.SIGUSR1)  # OpenVPN's soft restart: >STATE:RECONNECTING
        elif args.event == "flush":
            subprocess.run(["nft", "flush", "ruleset"], check=True)
        elif args.event == "tun-del":
            subprocess.run(["ip", "link", "del", "tun0"], check=True)
        else:
            sys.exit(f"nlwatch: unknown event {args.event}")
        expect_commit = args.event in ("kill-openvpn", "flush")
        # tun0 deleted: vpnsup reconnects OpenVPN at once and is back within tens of ms, a window
        # the status poll can miss; its own transition record (event, time) is read afterwards.
        expect_leave = args.event not in ("flush", "tun-del")
        commit = left = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ((expect_commit and commit is None) or (expect_leave and left is None)):
            watch.read(0.001)
            if exit_fds and exited is None and select.select(exit_fds, [], [], 0)[0]:
                exited = now_ms()
            if commit is None:
                # The kernel names the committing thread: one of vpnsup's threads.
                ours = [t for t in watch.transactions if os.path.exists(f"/proc/{args.vpnsup_pid}/task/{t['pid']}")]
                commit = ours[0] if ours else None
            if expect_leave and left is None and status_state(status) not in ("TunnelUp", None):
                left = now_ms()
        # Kernel evidence of the event itself where there is some: the flush's own commit, the
        # link's removal. Otherwise the moment just before the signal was sent.
        for fd in exit_fds:
            os.close(fd)
        gone = [t for t, what, name in watch.links if what == "del" and name == "tun0"]
        tun_gone = (gone[0] - t_event) if gone and args.event == "kill-openvpn" else None
        if args.event == "flush":
            flushes = [t for t in watch.transactions if t["comm"] == "nft"]
            t_event = flushes[0]["t"] if flushes else t_event
        elif args.event == "tun-del":
            dels = [t for t, what, name in watch.links if what == "del" and name == "tun0"]
            t_event = dels[0] if dels else t_event
        back = None
        deadline = time.monotonic() + 30
        if args.event == "tun-del":
            time.sleep(0.5)
        while time.monotonic() < deadline:
            if status_state(status) == "TunnelUp":
                back = now_ms()
                break
            time.sleep(0.02)
        if args.event == "tun-del":
            transitions = (status_snapshot(status) or {}).get("transitions", [])
            down = transition_ms(transitions, t_wall, event="tunnelLinkDown")
            up = transition_ms(transitions, down, to="TunnelUp") if down is not None else None
            left = (t_event + down - t_wall) if down is not None else None
            back = (t_event + up - t_wall) if up is not None else None
        result = {"run": run, "event": args.event,
                  "commit": (commit["t"] - t_event) if commit else None,
                  "commit_from_command": (commit["t"] - t_before) if commit else None,
                  "chains": commit["chains"] if commit else None,
                  "left": (left - t_event) if left else None,
                  "tun_gone": tun_gone,
                  "exited": (exited - t_event) if exited else None,
                  "commit_from_exit": (commit["t"] - exited) if commit and exited else None,
                  "back": (back - t_event) if back else None}
        print(json.dumps(result), flush=True)


def main():
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("spawn")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--kind", choices=["oneshot", "daemon", "plain"], required=True)
    p.add_argument("--setup", default="")
    p.add_argument("--cleanup", default="")
    p.add_argument("--log", default="/dev/null", help="the command's stdout and stderr")
    p.add_argument("command", nargs="+")
    r = sub.add_parser("react")
    r.add_argument("--event", required=True)
    r.add_argument("--vpnsup-pid", type=int, required=True)
    r.add_argument("--runs", type=int, default=7)
    r.add_argument("--runtime", required=True)
    r.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()
    {"spawn": spawn, "react": react}[args.verb](args)


if __name__ == "__main__":
    main()
