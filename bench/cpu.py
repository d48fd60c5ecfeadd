#!/usr/bin/env python3
"""CPU cost of `tidemark run` jobs, side by side: each (label, binary, manifest) runs over each
input file, pinned to one core, the jobs' runs interleaved (so load drifts hit every job alike),
and the median CPU time (user + system, of the process alone) is reported per event.

Used for before/after comparisons of the engine (an older build's binary next to this one) and
for jobs without a peer to compare against (funnels, deduplication). The engine-against-DuckDB
comparison is bench/compare.sh.

  python3 bench/cpu.py --runs 5 --input a.jsonl --input b.jsonl \
      --job before=/path/to/old/tidemark:examples/quickstart.yaml \
      --job after=target/release/tidemark:examples/quickstart.yaml

Prints a Markdown table: job, input, events, median CPU seconds (min–max), events per CPU-second,
the state when the most windows were open (their number and bytes per open window: per
key-window for keyed analytics), and the most state at any moment with the live keys then (bytes
per key: per live user for a funnel).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

DONE = re.compile(
    r"done: (\d+) events in .*?peak (\d+) open windows \((\d+) bytes of state\), "
    r"most state (\d+) bytes for (\d+) live keys"
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--job", action="append", required=True, help="LABEL=BINARY:MANIFEST")
    p.add_argument("--input", action="append", required=True, help="JSON-lines events file")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--core", type=int, default=1, help="the core to pin to")
    args = p.parse_args()
    jobs = []
    for job in args.job:
        label, sep, rest = job.partition("=")
        binary, sep2, manifest = rest.rpartition(":")
        if not (sep and sep2 and label and binary and manifest):
            sys.exit(f"cpu.py: --job {job!r}: expected LABEL=BINARY:MANIFEST")
        for path in (binary, manifest):
            if not os.path.exists(path):
                sys.exit(f"cpu.py: {path}: no such file")
        jobs.append((label, binary, manifest))
    for path in args.input:
        if not os.path.exists(path):
            sys.exit(f"cpu.py: {path}: no such file")
    return args, jobs


def run_once(binary, manifest, events, core, out_dir):
    """CPU seconds of one run and what it reported at the end."""
    out = os.path.join(out_dir, "out.jsonl")
    cmd = ["taskset", "-c", str(core), binary, "run", "-f", manifest, "--input", events,
           "--output", out, "--dead-letter", os.path.join(out_dir, "dead.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = proc.communicate()
    status = proc.returncode
    if status != 0:
        sys.exit(f"cpu.py: {' '.join(cmd)} exited {status}: {stderr.decode()[-500:]}")
    m = DONE.search(stderr.decode())
    if not m:
        sys.exit(f"cpu.py: no summary line from {binary}: {stderr.decode()[-300:]}")
    return int(m.group(1)), tuple(int(m.group(i)) for i in range(2, 6))


def cpu_of(binary, manifest, events, core, out_dir):
    before = os.times()
    records, state = run_once(binary, manifest, events, core, out_dir)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return cpu, records, state


def main():
    args, jobs = parse_args()
    print("| job | input | events | CPU s, median (min–max) | events per CPU-s "
          "| peak open windows | bytes per window then | most state, bytes | live keys then | bytes per key |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as out_dir:
        for events in args.input:
            cpus = {label: [] for label, _, _ in jobs}
            seen = {}
            for _ in range(args.runs):
                for label, binary, manifest in jobs:
                    cpu, records, state = cpu_of(binary, manifest, events, args.core, out_dir)
                    cpus[label].append(cpu)
                    seen[label] = (records, state)
            for label, _, _ in jobs:
                records, (windows, state, most, keys) = seen[label]
                med = statistics.median(cpus[label])
                num = lambda n: f"{n:,.0f}".replace(",", " ")
                per = lambda a, b: num(a / b) if b else "–"
                print(f"| {label} | {os.path.basename(events)} | {num(records)} | {med:.3f} "
                      f"({min(cpus[label]):.3f}–{max(cpus[label]):.3f}) | {num(records / med)} "
                      f"| {num(windows)} | {per(state, windows)} | {num(most)} | {num(keys)} "
                      f"| {per(most, keys)} |", flush=True)


if __name__ == "__main__":
    main()
