#!/usr/bin/env python3
"""Sums JUnit XML reports (meson's gtest log, pytest's) into one line:
"N passed, N failed[, N skipped]". Exit 1 when anything failed."""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"junit_summary: cannot read {path}: {e}", file=sys.stderr)
        failed += 1
        continue
    for case in root.iter("testcase"):
        kids = {c.tag for c in case}
        if kids & {"failure", "error"}:
            failed += 1
        elif "skipped" in kids:
            skipped += 1
        else:
            passed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
