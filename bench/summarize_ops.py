#!/usr/bin/env python3
"""Markdown tables from bench_ops' JSON output, for docs/performance.md.

    build/bench/bench_ops --benchmark_repetitions=5 --benchmark_out=ops.json \
        --benchmark_out_format=json
    python3 bench/summarize_ops.py ops.json

With repetitions, the median rows are used; without, the single runs. Standard library only.
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize_ops.py BENCH_OPS_OUTPUT.json")
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    rows = doc["benchmarks"]
    if any(r.get("run_type") == "aggregate" for r in rows):
        rows = [r for r in rows if r.get("aggregate_name") == "median"]
    ctx = doc.get("context", {})
    peaks = {k: v for k, v in ctx.items() if k.startswith("fma_peak")}
    print(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz (nominal), "
          f"load average {ctx.get('load_avg', '?')}; {ctx.get('date', '')}")
    print("FMA peak (GFLOP/s): " + ", ".join(f"{k} = {v}" for k, v in sorted(peaks.items())))
    print()

    def unit(r):  # the time per iteration in microseconds
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[r.get("time_unit", "ns")]
        return r["real_time"] * scale

    def name_parts(r):
        name = r.get("run_name", r["name"]).replace("/real_time", "")
        return name.split("/")

    ops = [r for r in rows if r["name"].startswith("BM_Op/")]
    if ops:
        print("| model | pass | op | shapes | threads | µs | images/s | GFLOP/s | % of peak | GB/s | per step |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in ops:
            p = name_parts(r)  # BM_Op, model, pass, op, shapes, threads:T
            gflops = r.get("GFLOP/s")
            frac = r.get("peak_fraction")
            print(f"| {p[1]} | {p[2]} | {p[3]} | `{p[4]}` | {p[5].split(':')[1]} | {unit(r):.1f} | "
                  f"{r.get('items_per_second', 0):,.0f} | "
                  f"{'' if gflops is None else f'{gflops:.2f}'} | "
                  f"{'' if frac is None else f'{100 * frac:.1f}'} | "
                  f"{r.get('bytes_per_second', 0) / 1e9:.2f} | {r.get('per_step', 0):.0f} |")
        print()
    steps = [r for r in rows if r["name"].startswith("BM_TrainStep/")]
    if steps:
        print("| model | batch | threads | µs/step | images/s | epoch (60000 images), s | GFLOP/s | % of peak |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in steps:
            p = name_parts(r)  # BM_TrainStep, model, batch:B, threads:T
            ips = r.get("items_per_second", 0)
            print(f"| {p[1]} | {p[2].split(':')[1]} | {p[3].split(':')[1]} | {unit(r):.1f} | {ips:,.0f} | "
                  f"{60000 / ips if ips else float('nan'):.2f} | {r.get('GFLOP/s', 0):.2f} | "
                  f"{100 * r.get('peak_fraction', 0):.1f} |")
        print()
    profiles = [r for r in rows if r["name"].startswith("BM_StepProfile/")]
    for r in profiles:
        p = name_parts(r)
        kinds = sorted(((v, k[3:]) for k, v in r.items() if k.startswith("us:")), reverse=True)
        total = sum(v for v, _ in kinds)
        print(f"Step profile, {p[1]}, batch 32, {p[2].replace(':', ' ')}: {total:.0f} µs in kernels + SGD")
        print()
        print("| op kind | µs/step | share |")
        print("|---|---:|---:|")
        for v, k in kinds:
            print(f"| {k} | {v:.1f} | {100 * v / total:.1f}% |")
        print()
    over = [r for r in rows if r["name"].startswith("BM_ExecutorOverhead/")]
    if over:
        print("| executor chain | threads | ns/run | ns/node |")
        print("|---|---:|---:|---:|")
        for r in over:
            p = name_parts(r)
            print(f"| {p[1].replace(':', ' ')} | {p[2].split(':')[1]} | {r['ns_per_run']:.0f} | "
                  f"{r['ns_per_node']:.1f} |")


if __name__ == "__main__":
    main()
