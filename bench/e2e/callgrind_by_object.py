#!/usr/bin/python3
"""Instructions per packet by shared object and by function from a callgrind
profile: callgrind_by_object.py FILE.out PACKETS [TOP]

PACKETS is the sink's TX count for the run (espgw prints it in its final
report on SIGINT). Self cost, all threads, start-up included (start-up is a
few % over a 20 s run: dl-lookup, strcmp, memset, rte_fbarray). Profiles of
binaries with debug info (ipsec-secgw's -gdwarf-2) mix in inlined-call lines:
use the inclusive cost of the worker loop for those instead
(callgrind_annotate --inclusive=yes FILE | grep poll_mode_worker)."""
import collections
import re
import subprocess
import sys

f, npk = sys.argv[1], int(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 else 20
out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", f], capture_output=True, text=True).stdout
by_obj, by_fn = collections.Counter(), collections.Counter()
for line in out.splitlines():
    m = re.match(r"\s*([\d,]+) \([ \d.%]+\)\s+(.*)$", line)
    if not m or "PROGRAM TOTALS" in line or m.group(2).startswith("=>"):
        continue
    ir, rest = int(m.group(1).replace(",", "")), m.group(2)
    o = re.search(r"\[([^\]]+)\]\s*$", rest)
    by_obj[o.group(1).split("/")[-1] if o else "?"] += ir
    by_fn[rest[:120]] += ir
print(f"Ir per packet by object ({npk} packets)")
for k, v in by_obj.most_common(12):
    print(f"{v / npk:8.1f}  {k}")
print("Ir per packet by function (self)")
for k, v in by_fn.most_common(top):
    print(f"{v / npk:8.1f}  {k}")
