"""Drives scripts/lab.sh (the strongSwan lab) from tests: bring-up and
teardown, both charons through swanctl (its --raw output parsed here),
espgw through its control socket, commands inside the lab's namespaces, and
sequence-numbered UDP streams between the LAN host and the VPC host."""

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gateway_harness as h

ROOT = Path(__file__).resolve().parents[2]
LAB_SH = ROOT / "scripts" / "lab.sh"
STREAM = Path(__file__).resolve().parent / "lab_stream.py"
PY = "/usr/bin/python3"

LAN_HOST = "10.240.128.10"
VPC_HOST = "172.31.0.10"
VPC2_HOST = "172.30.0.10"   # behind the policy-based connection
TUNNELS = {  # charon's name -> (espgw tunnel, gateway member, AWS endpoint)
    "a1": ("aws-a1", "198.51.100.10", "203.0.113.1"),
    "a2": ("aws-a2", "198.51.100.10", "203.0.113.2"),
    "b1": ("aws-b1", "198.51.100.11", "203.0.113.129"),
    "b2": ("aws-b2", "198.51.100.11", "203.0.113.130"),
    "p1": ("aws-p1", "198.51.100.10", "203.0.113.3"),
}


def parse_vici_raw(text):
    """swanctl --raw output ('list-sa event {a1 {k=v child-sas {...}
    local-ts=[a b]}}' lines) as a list of dicts, one per message."""
    tokens = re.findall(r"[{}\[\]]|[^\s{}\[\]]+", text)

    def section(i):
        d = {}
        while i < len(tokens) and tokens[i] != "}":
            tok = tokens[i]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if tok.endswith("=") and nxt == "[":   # key=[a b]
                j = tokens.index("]", i + 2)
                d[tok[:-1]] = tokens[i + 2:j]
                i = j + 1
            elif "=" in tok:
                k, v = tok.split("=", 1)
                d[k] = v
                i += 1
            elif nxt == "{":
                d[tok], i = section(i + 2)
            else:
                i += 1
        return d, i + 1

    out, i = [], 0
    while i < len(tokens):
        if tokens[i] == "{":
            d, i = section(i + 1)
            out.append(d)
        else:
            i += 1
    return out


class Lab:
    def __init__(self, build, prefix=None, policy=None):
        if policy is None:
            policy = os.environ.get("LAB_POLICY", "1") == "1"
        self.prefix = prefix or f"egl{os.getpid()}"
        self.dir = Path(f"/tmp/espgw-lab-{self.prefix}")
        self.env = dict(os.environ, LAB_PREFIX=self.prefix, LAB_DIR=str(self.dir), ESPGW_BUILD=str(build),
                        LAB_POLICY="1" if policy else "0")
        self.sock = str(self.dir / "espgw.sock")
        self.up_seconds = None
        self.streams = []

    # -- the lab ------------------------------------------------------------
    def up(self, timeout=60):
        r = subprocess.run(["bash", str(LAB_SH), "up"], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"lab.sh up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        m = re.search(r"up in ([0-9.]+) s", r.stdout)
        self.up_seconds = float(m.group(1)) if m else None
        return self

    def pids(self):
        """The lab's daemons (espgw and both charons), from lab.sh's pid files."""
        out = []
        for f in ("espgw.pid", "gw/charon.pid", "aws/charon.pid"):
            try:
                out.append(int((self.dir / f).read_text()))
            except (OSError, ValueError):
                pass
        return out

    @staticmethod
    def remove_stale(build):
        """Labs left by test runs whose process is gone (killed mid-run): a
        test lab's prefix is egl + the pid of the run that made it."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for pid in sorted({int(m) for m in re.findall(r"^egl(\d+)-gw\b", names, re.M)}):
            if not os.path.exists(f"/proc/{pid}"):
                Lab(build, prefix=f"egl{pid}").down()

    def down(self):
        for s in self.streams:
            s.close()
        self.streams = []
        return subprocess.run(["bash", str(LAB_SH), "down"], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def status(self):
        r = subprocess.run(["bash", str(LAB_SH), "status"], env=self.env, capture_output=True, text=True,
                           timeout=60)
        return r.stdout + r.stderr

    def ns(self, side):
        return f"{self.prefix}-{side}"

    def sh(self, side, *cmd, timeout=10, check=True):
        r = subprocess.run(["ip", "netns", "exec", self.ns(side), *cmd], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{cmd} in {side}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def log(self, side):
        return (self.dir / side / "charon.log").read_text(errors="replace")

    # -- charon ---------------------------------------------------------------
    def swanctl(self, side, cmd, *args, timeout=10, check=True):
        r = subprocess.run(["swanctl", cmd, "--uri", f"unix://{self.dir}/{side}/charon.vici", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"swanctl {cmd} {args} on {side}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def children(self, side):
        """Every CHILD_SA: dicts of swanctl's fields plus 'ike' (the IKE_SA's name)."""
        out = []
        for msg in parse_vici_raw(self.swanctl(side, "--list-sas", "--raw")):
            for ike_name, ike in msg.items():
                if not isinstance(ike, dict):
                    continue
                for child in (ike.get("child-sas") or {}).values():
                    if isinstance(child, dict):
                        out.append(dict(child, ike=ike_name, ike_state=ike.get("state")))
        return out

    def installed(self, side, name):
        return [c for c in self.children(side) if c.get("name") == name and c.get("state") == "INSTALLED"]

    def rekey(self, side, child):
        self.swanctl(side, "--rekey", "--child", child)

    def write_swanctl_extra(self, side, text):
        """Extra swanctl.conf settings (merged into the connections), then reload."""
        (self.dir / side / "swanctl.d" / "test.conf").write_text(text)
        self.swanctl(side, "--load-conns", "--file", str(self.dir / side / "swanctl.conf"))

    # -- espgw ----------------------------------------------------------------
    def espgw(self, req):
        return h.control_request(self.sock, req)

    def sas(self):
        r = self.espgw({"op": "list-sas"})
        assert r["ok"], r
        return r["sas"]

    def tunnels(self):
        return {t["name"]: t for t in self.espgw({"op": "tunnels"})["tunnels"]}

    def stats(self):
        return self.espgw({"op": "stats"})

    def events(self):
        return Events(self.sock)

    def capture(self, side, iface, bpf, path):
        """tshark on an interface of the lab (the peer end of a veth: af_packet's
        qdisc_bypass hides espgw's TX on its own); returns a Capture to stop."""
        return Capture(self, side, iface, bpf, path)

    # -- traffic --------------------------------------------------------------
    def stream(self, port=5001, rate=500, lan=LAN_HOST, vpc=VPC_HOST):
        """A sequence-numbered UDP stream each way between a LAN host address
        and a VPC host address."""
        s = StreamPair(self, port, rate, lan, vpc)
        self.streams.append(s)
        return s


class Events:
    """espgw's event stream (subscribe on its own connection), collected by a thread."""

    def __init__(self, sock_path):
        self.events = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(sock_path)
        self.sock.sendall(b'{"op":"subscribe"}\n')
        self.file = self.sock.makefile("r")
        assert json.loads(self.file.readline()).get("subscribed"), "subscribe refused"
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.file:
                self.events.append(json.loads(line))
        except (OSError, ValueError):
            pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class Capture:
    def __init__(self, lab, side, iface, bpf, path):
        self.path = str(path)
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ns(side), "tshark", "-q", "-i", iface, "-f", bpf,
                                      "-w", self.path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 15
        line = ""
        while "Capturing on" not in line:  # tshark says so once the socket is open
            line = self.proc.stderr.readline()
            if (not line and self.proc.poll() is not None) or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"tshark did not start: {line}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.path


class Endpoint:
    def __init__(self, lab, side, bind, peer, port, rate):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(side), PY, str(STREAM), "--bind", bind, "--peer", peer,
             "--port", str(port), "--rate", str(rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def cmd(self, c, timeout=20):
        self.proc.stdin.write(c + "\n")
        self.proc.stdin.flush()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    break
                return json.loads(line)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"stream endpoint: no answer to {c!r}: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.cmd("quit", timeout=5)
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class StreamPair:
    """LAN -> VPC and VPC -> LAN streams; counts at the receivers."""

    def __init__(self, lab, port, rate, lan, vpc):
        self.lan = Endpoint(lab, "lan", lan, vpc, port, rate)
        self.vpc = Endpoint(lab, "aws", vpc, lan, port, rate)
        self.rate = rate
        time.sleep(0.3)  # both sockets bound before either sends

    def start(self):
        self.lan.cmd("start")
        self.vpc.cmd("start")
        self.t_start = time.monotonic_ns()

    def stop(self, drain=1.0):
        """Stops both senders, waits for what is in flight, returns
        {'up': result, 'down': result}: up = LAN -> VPC, down = VPC -> LAN."""
        sent_up = self.lan.cmd("stop")
        sent_down = self.vpc.cmd("stop")
        time.sleep(drain)
        return {"up": Result(sent_up, self.vpc.cmd("report")),
                "down": Result(sent_down, self.lan.cmd("report"))}

    def close(self):
        self.lan.close()
        self.vpc.close()


class Result:
    """What one direction's receiver saw against what its sender sent."""

    def __init__(self, sent, report):
        self.sent = sent["sent"]
        self.send_errors = set(sent["send_errors"])
        self.arrivals = [tuple(a) for a in report["arrivals"]]
        got = {s for s, _ in self.arrivals}
        self.expected = set(range(self.sent)) - self.send_errors
        self.missing = sorted(self.expected - got)
        self.duplicates = len(self.arrivals) - len(got)

    def gaps(self, t_from_ns=None, t_to_ns=None):
        """Holes in the stream (by sequence number) whose neighbours arrived
        within [t_from, t_to]: [(lost packets, ms between the last packet
        before the hole and the first after it)], largest first."""
        arr = sorted(self.arrivals)
        out = []
        for (s0, t0), (s1, t1) in zip(arr, arr[1:]):
            if s1 - s0 > 1 and (t_from_ns is None or t1 >= t_from_ns) and (t_to_ns is None or t0 <= t_to_ns):
                out.append((s1 - s0 - 1, (t1 - t0) / 1e6))
        return sorted(out, reverse=True)

    def summary(self):
        return (f"sent {self.sent} (+{len(self.send_errors)} refused by the sender's stack), "
                f"received {len(self.arrivals) - self.duplicates}, lost {len(self.missing)}, "
                f"duplicates {self.duplicates}")


def main():  # python3 lab.py: print a parsed --list-sas of a running lab (debugging)
    lab = Lab(os.environ.get("ESPGW_BUILD", ROOT / "build"), prefix=os.environ.get("LAB_PREFIX", "egl"))
    for side in ("aws", "gw"):
        for c in lab.children(side):
            print(side, json.dumps(c))


if __name__ == "__main__":
    sys.exit(main())
