"""Tuning variants against plain int8 at batch 8, paired: a variant is compared with the baseline of its own round.

    python -m bench.tuning --variants dq-group-128,dq-group-256 [--rounds 3] [--write docs/BENCHMARKS.md]

On a shared machine throughput drifts by 10-20% over minutes, more than most settings change it. Each round runs
the baseline and then every variant once, so a variant's ratio to its round's baseline cancels the drift; the
median over rounds is the figure to trust. Variants are bench.full_bench.TUNING's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench.full_bench import ROOT, TUNING, machine, measure_variant
from bench.markdown import write_section

BASELINE = "int8, batch 8 (baseline)"


def images_per_s(cache: Path, name: str | None, requests: int, tokens: int) -> float:
    measured = measure_variant({"images": 8, "tokens": tokens, "cache": str(cache)}, cache, name, requests)
    return measured["requests"] / measured["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-models")
    parser.add_argument("--variants", required=True, help=f"comma-separated: {', '.join(TUNING)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [name for name in names if name not in TUNING]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(TUNING)}")

    rates: dict[str, list[float]] = {BASELINE: [], **{name: [] for name in names}}
    for round_ in range(args.rounds):
        for name in rates:
            rates[name].append(images_per_s(args.cache, None if name == BASELINE else name, args.requests,
                                            args.tokens))
            print(f"round {round_ + 1}: {name} {rates[name][-1]:.3f} images/s", flush=True)

    lines = [
        "## Tuning, paired rounds (int8, batch 8)", "",
        f"Command: `python -m bench.tuning {' '.join(sys.argv[1:])}`",
        f"Machine: {machine()}. Each round runs the baseline, then every variant, {args.requests} requests each "
        f"({args.tokens} tokens, EOS ignored, the full benchmark's images); the ratio is to the same round's "
        "baseline.", "",
        "| variant | images/s per round | ratio to baseline per round | median ratio |", "|---|---|---|---|",
    ]
    for name, values in rates.items():
        ratios = [value / base for value, base in zip(values, rates[BASELINE], strict=True)]
        lines.append(f"| {name} | {', '.join(f'{value:.3f}' for value in values)} "
                     f"| {', '.join(f'{ratio:.2f}' for ratio in ratios)} | **{statistics.median(ratios):.2f}** |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
