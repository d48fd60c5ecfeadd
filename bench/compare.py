"""Side-by-side benchmark: Tidemark's quickstart job against DuckDB on the same JSON-lines files.

Run through bench/compare.sh, which builds the release binary, installs DuckDB into a cached
virtual environment and pins this process (and so both engines) to one core. For each shape
(user count x id length x window) it generates a file with `tidemark generate` (cached), then,
alternating, times `tidemark run -q -f <manifest> --input F --output O` as a child process and
DuckDB (threads=1, `read_json` + the same GROUP BY and full outer join, `COPY ... TO` a CSV file)
in this process; it prints the medians as a Markdown table and checks that both answers agree
per user and window (clicks, purchases, revenue).

Tidemark's time is the whole process (start-up included); DuckDB's is the query alone
(interpreter start-up and `import duckdb` excluded), which favours DuckDB slightly.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb

HOUR_MS = 3_600_000
PRODUCTS = 10_000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the tidemark binary")
    p.add_argument("--repo", required=True, help="the repository root (for examples/)")
    p.add_argument("--dir", required=True, help="where generated files are cached")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", default="10000,100000,1000000", help="comma-separated user counts")
    p.add_argument("--ids", default="short,long", help="short (u123) and/or long (36 bytes)")
    p.add_argument("--windows", default="1h,10m", help="1h: tumbling 1 h; 10m: sliding 1 h every 10 m")
    p.add_argument("--runs", type=int, default=5, help="timed runs per engine (median)")
    p.add_argument("--manifest", default="examples/quickstart.yaml")
    return p.parse_args()


def long_id(prefix, n):
    """A 36-byte id (longer than the 23 bytes a key entry holds inline) for number `n`."""
    if prefix == "u":
        return f"{n:08d}-0000-4000-8000-{n * 7919 % 10**12:012d}"
    return f"sku-{n:012d}"


def events_file(args, users, ids):
    os.makedirs(args.dir, exist_ok=True)
    short = os.path.join(args.dir, f"events-{args.events}-{users}-short.jsonl")
    if not os.path.exists(short):
        tmp = short + ".tmp"
        subprocess.run(
            [args.bin, "generate", "--rate", "0", "--events", str(args.events),
             "--users", str(users), "--products", str(PRODUCTS), "--out", tmp],
            check=True,
        )
        os.replace(tmp, short)
    if ids == "short":
        return short
    path = os.path.join(args.dir, f"events-{args.events}-{users}-long.jsonl")
    if not os.path.exists(path):
        pattern = re.compile(rb'"(user_id|product_id)":"([up])(\d+)"')

        def lengthen(m):
            field, prefix, n = m.group(1), m.group(2).decode(), int(m.group(3))
            return b'"%s":"%s"' % (field, long_id(prefix, n).encode())

        tmp = path + ".tmp"
        with open(short, "rb") as src, open(tmp, "wb") as dst:
            for line in src:
                dst.write(pattern.sub(lengthen, line))
        os.replace(tmp, path)
    return path


def manifest(args, window, tmpdir):
    text = open(os.path.join(args.repo, args.manifest)).read()
    tumbling = "{ type: tumbling, size: 1h }"
    if tumbling not in text:
        sys.exit(f"{args.manifest} has no '{tumbling}' window to vary")
    if window == "1h":
        return os.path.join(args.repo, args.manifest), HOUR_MS
    slide = {"10m": 600_000}[window]
    path = os.path.join(tmpdir, f"quickstart-sliding-{window}.yaml")
    with open(path, "w") as f:
        f.write(text.replace(tumbling, f"{{ type: sliding, size: 1h, slide: {window} }}"))
    return path, slide


def time_tidemark(args, manifest_path, events, out):
    """Wall and CPU seconds of one `tidemark run` process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [args.bin, "run", "-q", "-f", manifest_path, "--input", events, "--output", out],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        sys.exit(f"tidemark run failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime


def duckdb_query(events, slide):
    """The quickstart report as one SQL query: windows of 1 h starting every `slide` ms."""
    source = (
        f"read_json('{events}', format='newline_delimited', "
        "columns={type: 'VARCHAR', user_id: 'VARCHAR', price: 'DOUBLE', ts: 'BIGINT'})"
    )
    if slide == HOUR_MS:
        windowed = f"SELECT user_id, type, price, ts // {HOUR_MS} * {HOUR_MS} AS ws FROM {source}"
    else:
        windowed = (
            f"SELECT user_id, type, price, ts // {slide} * {slide} - k * {slide} AS ws "
            f"FROM {source}, range(0, {HOUR_MS // slide}) AS r(k)"
        )
    return f"""
        WITH ev AS ({windowed}),
        c AS (SELECT user_id, ws, count(*) AS clicks FROM ev
              WHERE type IN ('view', 'click', 'add_to_cart') GROUP BY ALL),
        p AS (SELECT user_id, ws, count(*) AS purchases, sum(price) AS revenue FROM ev
              WHERE type = 'purchase' GROUP BY ALL)
        SELECT coalesce(c.user_id, p.user_id) AS key, coalesce(c.ws, p.ws) AS ws,
               coalesce(clicks, 0) AS clicks, coalesce(purchases, 0) AS purchases,
               coalesce(revenue, 0) AS revenue,
               CASE WHEN coalesce(clicks, 0) = 0 THEN 0.0
                    ELSE coalesce(purchases, 0) / clicks END AS conversion_rate
        FROM c FULL OUTER JOIN p ON c.user_id = p.user_id AND c.ws = p.ws"""


def time_duckdb(query, out):
    """Wall and CPU seconds of the query on a fresh single-threaded connection."""
    con = duckdb.connect()
    con.execute("SET threads = 1")
    started, cpu = time.perf_counter(), time.process_time()
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT csv, HEADER true)")
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    return wall, cpu


def check(tidemark_out, duckdb_out):
    """(results, disagreements): per user and window, the newest revision of Tidemark's result
    against DuckDB's row."""
    con = duckdb.connect()
    rows, only_duckdb, only_tidemark, differ = con.execute(f"""
        WITH t AS (
            SELECT key, epoch_ms("window"."start"::TIMESTAMPTZ) AS ws,
                   arg_max(clicks, revision) AS clicks, arg_max(purchases, revision) AS purchases,
                   arg_max(revenue, revision) AS revenue
            FROM read_json('{tidemark_out}', format='newline_delimited', columns={{
                key: 'VARCHAR', "window": 'STRUCT("start" VARCHAR, "end" VARCHAR)',
                clicks: 'BIGINT', purchases: 'BIGINT', revenue: 'DOUBLE', revision: 'BIGINT'}})
            GROUP BY ALL),
        d AS (SELECT * FROM read_csv('{duckdb_out}', header = true))
        SELECT count(*), count(*) FILTER (WHERE t.key IS NULL),
               count(*) FILTER (WHERE d.key IS NULL),
               count(*) FILTER (WHERE t.key IS NOT NULL AND d.key IS NOT NULL AND (
                   t.clicks <> d.clicks OR t.purchases <> d.purchases
                   OR abs(t.revenue - d.revenue) > 1e-6 * greatest(1, abs(d.revenue))))
        FROM t FULL OUTER JOIN d ON t.key = d.key AND t.ws = d.ws""").fetchone()
    con.close()
    return rows, only_duckdb + only_tidemark + differ


def fmt(n):
    return f"{n:,.0f}".replace(",", " ")


def main():
    args = parse_args()
    print(f"cpu affinity: {sorted(os.sched_getaffinity(0))}; duckdb {duckdb.__version__}; "
          f"{args.runs} runs per engine, medians", flush=True)
    print()
    print("| users | ids | window | bytes/event | Tidemark events/s | DuckDB events/s | ratio "
          "| Tidemark CPU s | DuckDB CPU s | ratio by CPU | results | answers |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    failed = False
    with tempfile.TemporaryDirectory(prefix="tidemark-compare-") as tmpdir:
        for users in [int(u) for u in args.users.split(",")]:
            for ids in args.ids.split(","):
                events = events_file(args, users, ids)
                size = os.path.getsize(events)
                for window in args.windows.split(","):
                    manifest_path, slide = manifest(args, window, tmpdir)
                    query = duckdb_query(events, slide)
                    t_out = os.path.join(tmpdir, "tidemark.jsonl")
                    d_out = os.path.join(tmpdir, "duckdb.csv")
                    t_runs, d_runs = [], []
                    for _ in range(args.runs):
                        t_runs.append(time_tidemark(args, manifest_path, events, t_out))
                        d_runs.append(time_duckdb(query, d_out))
                    rows, bad = check(t_out, d_out)
                    failed |= bad != 0
                    t_wall = statistics.median(w for w, _ in t_runs)
                    d_wall = statistics.median(w for w, _ in d_runs)
                    t_rate, d_rate = args.events / t_wall, args.events / d_wall
                    t_cpu = statistics.median(c for _, c in t_runs)
                    d_cpu = statistics.median(c for _, c in d_runs)
                    label = {"1h": "tumbling 1 h", "10m": "sliding 1 h / 10 m"}[window]
                    print(f"| {fmt(users)} | {ids} | {label} | {size / args.events:.0f} "
                          f"| {fmt(t_rate)} | {fmt(d_rate)} | {t_rate / d_rate:.2f} "
                          f"| {t_cpu:.2f} | {d_cpu:.2f} | {d_cpu / t_cpu:.2f} "
                          f"| {fmt(rows)} | {'agree' if bad == 0 else f'{bad} DIFFER'} |",
                          flush=True)
    print()
    print("ratio = Tidemark events/s / DuckDB events/s, wall time (above 1: Tidemark is faster); "
          "ratio by CPU = DuckDB CPU seconds / Tidemark CPU seconds (steadier on a shared machine)")
    if failed:
        sys.exit("the two engines' answers differ")


if __name__ == "__main__":
    main()
