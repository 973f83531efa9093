"""``minions tune sqlite``: measure the SQLite state store's settings on this machine.

It runs real write benchmarks (:mod:`.sqlite_bench`) in a temporary folder — never the
project's store — and compares ``SQLiteStateStore`` under each candidate setting with the
*immediate* baseline, a store that commits one transaction per save.

The store's tunables are ``inline_commit_limit`` (``--tune-inline-commit-limit-ms``, default
``never,0.25,1,4``) and ``synchronous`` (``--tune-synchronous``, default ``full``; add
``normal`` to see what giving up durability against a power cut buys). Its batching has no
other knob: a transaction holds the saves of one pass of the event loop, so batches grow as fast
as saves arrive, without a timer or a cap. The original project's batch options
(``--tune-batch-max-queued-writes``, ``--tune-flush-delay-ms``,
``--tune-interarrival-delay-ms`` and the like) are accepted, so its scripts run, and ignored,
with a note on stderr.

Modes:

* no mode option: one benchmark (``--ops``, ``--concurrency``) of the baseline and of the store
  with ``--inline-commit-limit-ms`` and ``--synchronous``, with the speedup;
* ``--tune-curve``: every candidate under three workload profiles — *low* (few saves, one at a
  time: latency), *medium*, *upper* (many concurrent saves: throughput) — ranked by a score:
  ``--tune-low-weight`` x low p95 closeness to the baseline + ``--tune-medium-weight`` x the
  same for medium + ``--tune-upper-throughput-weight`` x upper throughput relative to the best
  candidate + ``--tune-upper-fullness-weight`` x upper rows per commit relative to the
  concurrency;
* ``--recommend-config``: the same sweep, then two recommendations — ``batched_balanced``
  (the best score among candidates at most 1.5x the baseline's low p95 and 1.25x its medium
  p95 and at least 2x its upper throughput) and ``batched_max_throughput`` (the highest upper
  throughput at most 5x the baseline's low p95) — with a confidence (``high`` after 3 rounds
  that passed the guardrails, ``medium`` after 2, else ``low``) and how to apply them, in text
  or (``--recommend-output json``) JSON. ``--require-...`` options add constraints.

The command only measures and recommends; it changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sqlite_bench import Candidate, RunResult, run_once

__all__ = ["add_arguments", "main"]

_IGNORED = (
    "--tune-batch-max-queued-writes",
    "--tune-flush-delay-ms",
    "--tune-interarrival-delay-ms",
    "--batched-batch-max-queued-writes",
    "--flush-delay-ms",
    "--batch-max-interarrival-delay-ms",
)
_PROFILES = ("low", "medium", "upper")
#: Guardrails of the two recommendations, against the immediate baseline.
_BALANCED = {"low": 1.5, "medium": 1.25, "upper": 2.0}
_THROUGHPUT_LOW = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--ops", type=_positive, default=256, help="saves measured per run (default 256)")
    add("--concurrency", type=_positive, default=64, help="saves at once (default 64)")
    add("--payload-bytes", type=_positive, default=1024, help="checkpoint size (default 1024)")
    add("--warmup-ops", type=_count, default=64, help="saves before measuring (default 64)")
    add("--rounds", type=_positive, default=3, help="repetitions, averaged (default 3)")
    add(
        "--inline-commit-limit-ms",
        type=_limit,
        default=1.0,
        metavar="MS|never",
        help="the store's inline_commit_limit in the plain benchmark (default 1)",
    )
    add("--synchronous", choices=("full", "normal"), default="full")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--tune-curve", action="store_true", help="rank every candidate over three profiles"
    )
    modes.add_argument(
        "--recommend-config",
        action="store_true",
        help="sweep the candidates and recommend SQLiteStateStore settings",
    )
    add("--recommend-output", choices=("text", "json"), default="text")
    for profile, ops, concurrency in (("low", 64, 1), ("medium", 128, 16), ("upper", 1024, 256)):
        add(f"--profile-{profile}-ops", type=_positive, default=ops)
        add(f"--profile-{profile}-concurrency", type=_positive, default=concurrency)
    add(
        "--tune-inline-commit-limit-ms",
        type=_limits,
        default="never,0.25,1,4",
        metavar="LIST",
        help="inline_commit_limit candidates in ms ('never': commits on the writer thread)",
    )
    add(
        "--tune-synchronous",
        type=_synchronous,
        default="full",
        metavar="LIST",
        help="synchronous candidates: full, normal or full,normal (default full)",
    )
    add("--tune-top-n", type=_positive, default=10, help="candidates listed (default 10)")
    add("--tune-low-weight", type=float, default=25.0)
    add("--tune-medium-weight", type=float, default=20.0)
    add("--tune-upper-throughput-weight", type=float, default=40.0)
    add("--tune-upper-fullness-weight", type=float, default=15.0)
    add("--require-low-p95-ms", type=float, help="only candidates with a low p95 at most this")
    add("--require-medium-p95-ms", type=float)
    add("--require-upper-speedup", type=float, help="only candidates this much faster, at least")
    add("--require-upper-rows-per-commit", type=float)
    original = parser.add_argument_group(
        "options of the original project's store",
        "accepted and ignored: this store has no batch cap, flush timer or inter-arrival wait",
    )
    for option in _IGNORED:
        original.add_argument(option, metavar="VALUE", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    given = [o for o in _IGNORED if getattr(args, o[2:].replace("-", "_")) is not None]
    if given:
        print(
            f"minions tune sqlite: ignoring {', '.join(given)}: the original store's knobs; this "
            "store batches the saves of each event-loop pass, without a cap or a timer",
            file=sys.stderr,
        )
    if args.recommend_config or args.tune_curve:
        results = asyncio.run(_sweep(args))
        if args.recommend_config:
            _print_recommendation(results, args)
        else:
            _print_curve(results, args)
    else:
        _print_benchmark(asyncio.run(_benchmark(args)))
    return 0


# -- arguments ------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def _limit(text: str) -> float | None:
    if text.strip().lower() in ("never", "none", "-"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected milliseconds (0 or more) or 'never': {text!r}")
    return value


def _limits(text: str) -> list[float | None]:
    values = [_limit(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of ms or 'never'")
    return list(dict.fromkeys(values))


def _synchronous(text: str) -> list[str]:
    values = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not values or any(v not in ("full", "normal") for v in values):
        raise argparse.ArgumentTypeError(f"expected full, normal or full,normal; got {text!r}")
    return list(dict.fromkeys(values))


def _candidates(args: argparse.Namespace) -> list[Candidate]:
    # The type functions run on the defaults too (argparse converts string defaults).
    limits: list[float | None] = args.tune_inline_commit_limit_ms
    modes: list[Any] = args.tune_synchronous
    return [Candidate(None if ms is None else ms / 1000, sync) for sync in modes for ms in limits]


# -- measuring ------------------------------------------------------------------------------------


async def _benchmark(args: argparse.Namespace) -> list[RunResult]:
    ms = args.inline_commit_limit_ms
    candidate = Candidate(None if ms is None else ms / 1000, args.synchronous)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="minions-tune-sqlite-") as tmp:
        for round_index in range(args.rounds):
            folder = Path(tmp) / f"round-{round_index}"
            folder.mkdir()
            for label, chosen in (("immediate", None), ("batched", candidate)):
                results.append(
                    await run_once(
                        folder,
                        chosen,
                        label=label,
                        ops=args.ops,
                        concurrency=args.concurrency,
                        payload_bytes=args.payload_bytes,
                        warmup_ops=args.warmup_ops,
                    )
                )
    return results


async def _sweep(args: argparse.Namespace) -> list[RunResult]:
    candidates = _candidates(args)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="minions-tune-sqlite-") as tmp:
        for round_index in range(args.rounds):
            for profile in _PROFILES:
                ops = getattr(args, f"profile_{profile}_ops")
                concurrency = getattr(args, f"profile_{profile}_concurrency")
                warmup = min(args.warmup_ops, max(concurrency, ops // 4))
                folder = Path(tmp) / f"round-{round_index}-{profile}"
                folder.mkdir()
                chosen: list[Candidate | None] = [None, *candidates]
                for candidate in chosen:
                    name = "immediate" if candidate is None else candidate.label
                    results.append(
                        await run_once(
                            folder,
                            candidate,
                            label=f"{profile}:{name}",
                            ops=ops,
                            concurrency=concurrency,
                            payload_bytes=args.payload_bytes,
                            warmup_ops=warmup,
                        )
                    )
    return results


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class _Score:
    candidate: Candidate
    score: float
    low_p95_ms: float
    low_ratio: float
    medium_p95_ms: float
    medium_ratio: float
    upper_ops_per_sec: float
    upper_speedup: float
    upper_commits: float
    upper_rows_per_commit: float
    db_kib: float

    def json(self) -> dict[str, Any]:
        return {
            "label": self.candidate.label,
            "inline_commit_limit_ms": self.candidate.limit_ms,
            "synchronous": self.candidate.synchronous,
            "score": round(self.score, 4),
            "low_p95_ms": round(self.low_p95_ms, 4),
            "low_p95_vs_immediate": round(self.low_ratio, 4),
            "medium_p95_ms": round(self.medium_p95_ms, 4),
            "medium_p95_vs_immediate": round(self.medium_ratio, 4),
            "upper_ops_per_sec": round(self.upper_ops_per_sec, 4),
            "upper_speedup": round(self.upper_speedup, 4),
            "upper_commits": round(self.upper_commits, 4),
            "upper_rows_per_commit": round(self.upper_rows_per_commit, 4),
            "db_kib": round(self.db_kib, 4),
        }


@dataclass(frozen=True)
class _Pick:
    name: str
    score: _Score
    status: str  # strict: passed the guardrails; fallback: none did
    reason: str


def _by_profile(results: list[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    grouped: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        profile, _, name = result.label.partition(":")
        grouped.setdefault((profile, name), []).append(result)
    return grouped


def _scores(results: list[RunResult], args: argparse.Namespace) -> list[_Score]:
    grouped = _by_profile(results)
    base = {p: grouped[(p, "immediate")] for p in _PROFILES}
    base_low = _mean([r.save_p95_ms for r in base["low"]])
    base_medium = _mean([r.save_p95_ms for r in base["medium"]])
    base_upper = _mean([r.ops_per_sec for r in base["upper"]])
    candidates = {r.label.partition(":")[2]: r.candidate for r in results if r.candidate}
    upper = {name: _mean([r.ops_per_sec for r in grouped[("upper", name)]]) for name in candidates}
    best_upper = max(upper.values(), default=0.0)
    concurrency = max(1, args.profile_upper_concurrency)
    scores: list[_Score] = []
    for name, candidate in candidates.items():
        assert candidate is not None
        low = _mean([r.save_p95_ms for r in grouped[("low", name)]])
        medium = _mean([r.save_p95_ms for r in grouped[("medium", name)]])
        upper_runs = grouped[("upper", name)]
        rows = _mean([r.rows_per_commit for r in upper_runs])
        score = (
            args.tune_low_weight * (min(1.0, base_low / low) if low else 0.0)
            + args.tune_medium_weight * (min(1.0, base_medium / medium) if medium else 0.0)
            + args.tune_upper_throughput_weight * (upper[name] / best_upper if best_upper else 0.0)
            + args.tune_upper_fullness_weight * min(1.0, rows / concurrency)
        )
        scores.append(
            _Score(
                candidate=candidate,
                score=score,
                low_p95_ms=low,
                low_ratio=low / base_low if base_low else 0.0,
                medium_p95_ms=medium,
                medium_ratio=medium / base_medium if base_medium else 0.0,
                upper_ops_per_sec=upper[name],
                upper_speedup=upper[name] / base_upper if base_upper else 0.0,
                upper_commits=_mean([r.commits for r in upper_runs]),
                upper_rows_per_commit=rows,
                db_kib=_mean([r.db_bytes for r in upper_runs]) / 1024,
            )
        )
    return sorted(scores, key=lambda s: s.score, reverse=True)


def _allowed(score: _Score, args: argparse.Namespace) -> bool:
    checks: list[tuple[float | None, Callable[[float], bool]]] = [
        (args.require_low_p95_ms, lambda limit: score.low_p95_ms <= limit),
        (args.require_medium_p95_ms, lambda limit: score.medium_p95_ms <= limit),
        (args.require_upper_speedup, lambda limit: score.upper_speedup >= limit),
        (args.require_upper_rows_per_commit, lambda limit: score.upper_rows_per_commit >= limit),
    ]
    return all(limit is None or check(limit) for limit, check in checks)


def _pick_balanced(ranked: list[_Score], args: argparse.Namespace) -> _Pick:
    g = _BALANCED
    passing = [
        s
        for s in ranked
        if s.low_ratio <= g["low"]
        and s.medium_ratio <= g["medium"]
        and s.upper_speedup >= g["upper"]
        and _allowed(s, args)
    ]
    if passing:
        reason = (
            f"best score with low p95<={g['low']:g}x and medium p95<={g['medium']:g}x immediate "
            f"and upper throughput>={g['upper']:g}x immediate"
        )
        return _Pick("batched_balanced", passing[0], "strict", reason)
    reason = "no candidate passed the balanced guardrails; the best score is shown"
    return _Pick("batched_balanced", ranked[0], "fallback", reason)


def _pick_throughput(ranked: list[_Score], args: argparse.Namespace) -> _Pick:
    passing = [s for s in ranked if s.low_ratio <= _THROUGHPUT_LOW and _allowed(s, args)]
    if passing:
        best = max(passing, key=lambda s: s.upper_ops_per_sec)
        reason = f"highest upper throughput with low p95<={_THROUGHPUT_LOW:g}x immediate"
        return _Pick("batched_max_throughput", best, "strict", reason)
    best = max(ranked, key=lambda s: s.upper_ops_per_sec)
    reason = "no candidate passed the throughput guardrails; the highest throughput is shown"
    return _Pick("batched_max_throughput", best, "fallback", reason)


def _confidence(pick: _Pick, rounds: int) -> str:
    if pick.status != "strict":
        return "low"
    return "high" if rounds >= 3 else "medium" if rounds >= 2 else "low"


# -- printing -------------------------------------------------------------------------------------


def _print_benchmark(results: list[RunResult]) -> None:
    first = results[0]
    print(
        f"SQLite state store write benchmark ({first.ops} ops/run, concurrency="
        f"{first.concurrency}, payload={first.payload_bytes} bytes)"
    )
    print()
    print(
        f"{'mode':<10} {'inline':>7} {'sync':>6} {'ops/s':>10} {'elapsed ms':>12} "
        f"{'save p50':>10} {'save p95':>10} {'commits':>9} {'rows/commit':>12} {'db KiB':>9}"
    )
    by_label: dict[str, list[RunResult]] = {}
    for result in results:
        by_label.setdefault(result.label, []).append(result)
    for label, runs in by_label.items():
        candidate = runs[0].candidate
        inline = "-" if candidate is None else _ms(candidate.limit_ms)
        sync = "full" if candidate is None else candidate.synchronous
        print(
            f"{label:<10} {inline:>7} {sync:>6} "
            f"{_mean([r.ops_per_sec for r in runs]):>10.0f} "
            f"{_mean([r.elapsed_ms for r in runs]):>12.1f} "
            f"{_mean([r.save_p50_ms for r in runs]):>10.2f} "
            f"{_mean([r.save_p95_ms for r in runs]):>10.2f} "
            f"{_mean([r.commits for r in runs]):>9.1f} "
            f"{_mean([r.rows_per_commit for r in runs]):>12.1f} "
            f"{_mean([r.db_bytes for r in runs]) / 1024:>9.1f}"
        )
    batched, immediate = by_label["batched"], by_label["immediate"]
    speed = _mean([r.ops_per_sec for r in batched]) / _mean([r.ops_per_sec for r in immediate])
    saved = 1 - _mean([r.elapsed_ms for r in batched]) / _mean([r.elapsed_ms for r in immediate])
    print()
    print(f"throughput speedup: {speed:.2f}x")
    print(f"elapsed-time reduction: {saved * 100:.1f}%")


def _print_baselines(results: list[RunResult]) -> None:
    grouped = _by_profile(results)
    print("Immediate baselines:")
    print(
        f"{'profile':<8} {'ops':>6} {'conc':>5} {'ops/s':>10} {'p50':>8} {'p95':>8} {'commits':>9}"
    )
    for profile in _PROFILES:
        runs = grouped[(profile, "immediate")]
        print(
            f"{profile:<8} {runs[0].ops:>6} {runs[0].concurrency:>5} "
            f"{_mean([r.ops_per_sec for r in runs]):>10.0f} "
            f"{_mean([r.save_p50_ms for r in runs]):>8.2f} "
            f"{_mean([r.save_p95_ms for r in runs]):>8.2f} "
            f"{_mean([r.commits for r in runs]):>9.1f}"
        )


_RANK_HEADER = (
    f"{'rank':>4} {'pick':<19} {'score':>7} {'inline':>7} {'sync':>6} {'low p95':>9} "
    f"{'low/imm':>8} {'med p95':>9} {'med/imm':>8} {'upper ops/s':>12} {'upper x':>8} "
    f"{'rows/commit':>12}"
)


def _rank_line(rank: int, pick: str, s: _Score) -> str:
    return (
        f"{rank:>4} {pick:<19} {s.score:>7.2f} {_ms(s.candidate.limit_ms):>7} "
        f"{s.candidate.synchronous:>6} {s.low_p95_ms:>9.2f} {s.low_ratio:>8.2f} "
        f"{s.medium_p95_ms:>9.2f} {s.medium_ratio:>8.2f} {s.upper_ops_per_sec:>12.0f} "
        f"{s.upper_speedup:>8.2f} {s.upper_rows_per_commit:>12.1f}"
    )


def _print_curve(results: list[RunResult], args: argparse.Namespace) -> None:
    ranked = _scores(results, args)
    print(
        f"SQLite state store tuning sweep (payload={args.payload_bytes} bytes, "
        f"rounds={args.rounds})"
    )
    print()
    print(_formula(args))
    print()
    _print_baselines(results)
    print()
    print(_RANK_HEADER)
    for rank, score in enumerate(ranked[: args.tune_top_n], start=1):
        print(_rank_line(rank, "-", score))


def _formula(args: argparse.Namespace) -> str:
    return (
        f"score = {args.tune_low_weight:g} low p95 closeness to immediate + "
        f"{args.tune_medium_weight:g} medium p95 closeness to immediate + "
        f"{args.tune_upper_throughput_weight:g} upper throughput vs best candidate + "
        f"{args.tune_upper_fullness_weight:g} upper rows per commit vs concurrency"
    )


def _print_recommendation(results: list[RunResult], args: argparse.Namespace) -> None:
    ranked = _scores(results, args)
    picks = [_pick_balanced(ranked, args), _pick_throughput(ranked, args)]
    if args.recommend_output == "json":
        print(json.dumps(_json(results, ranked, picks, args), indent=2, sort_keys=True))
        return
    _print_baselines(results)
    print()
    for pick in picks:
        s, c = pick.score, pick.score.candidate
        print(f"Recommended {pick.name} config:")
        print(f"  inline_commit_limit_ms={_ms(c.limit_ms)}")
        print(f"  synchronous={c.synchronous}")
        print(f"  confidence={_confidence(pick, args.rounds)}")
        print(f"  selection_status={pick.status}")
        print(f"  selection_reason={pick.reason}")
        print(f"  score={s.score:.2f}")
        print(f"  low p95={s.low_p95_ms:.2f} ms ({s.low_ratio:.2f}x immediate)")
        print(f"  medium p95={s.medium_p95_ms:.2f} ms ({s.medium_ratio:.2f}x immediate)")
        print(
            f"  upper throughput={s.upper_ops_per_sec:.0f} ops/s ({s.upper_speedup:.2f}x immediate)"
        )
        print(f"  upper commits={s.upper_commits:.1f}")
        print(f"  upper rows/commit={s.upper_rows_per_commit:.1f}")
        print(f"  code: {_code(c)}")
        print(f"  minions.toml: [WorkflowStore] {_toml(c)}")
        if c.synchronous == "normal":
            print("  note: with synchronous=normal a save survives the process, not a power cut")
        print()
    print("Top candidates:")
    print(_RANK_HEADER)
    shown = list(ranked[: args.tune_top_n])
    for pick in picks:
        if not any(s is pick.score for s in shown):
            shown.append(pick.score)
    rank = {id(s): i for i, s in enumerate(ranked, start=1)}
    for s in shown:
        names = [p.name.removeprefix("batched_") for p in picks if p.score is s]
        label = ",".join("throughput" if n == "max_throughput" else n for n in names) or "-"
        print(_rank_line(rank[id(s)], label, s))


def _json(
    results: list[RunResult], ranked: list[_Score], picks: list[_Pick], args: argparse.Namespace
) -> dict[str, Any]:
    grouped = _by_profile(results)
    baseline = {
        p: {
            "ops": grouped[(p, "immediate")][0].ops,
            "concurrency": grouped[(p, "immediate")][0].concurrency,
            "ops_per_sec": round(_mean([r.ops_per_sec for r in grouped[(p, "immediate")]]), 4),
            "p50_ms": round(_mean([r.save_p50_ms for r in grouped[(p, "immediate")]]), 4),
            "p95_ms": round(_mean([r.save_p95_ms for r in grouped[(p, "immediate")]]), 4),
            "commits": round(_mean([r.commits for r in grouped[(p, "immediate")]]), 4),
        }
        for p in _PROFILES
    }

    def described(pick: _Pick) -> dict[str, Any]:
        return {
            **pick.score.json(),
            "selection_status": pick.status,
            "selection_reason": pick.reason,
            "confidence": _confidence(pick, args.rounds),
            "code": _code(pick.score.candidate),
            "minions_toml": f"[WorkflowStore] {_toml(pick.score.candidate)}",
        }

    balanced, throughput = picks
    return {
        "recommendation": described(balanced),
        "confidence": _confidence(balanced, args.rounds),
        "constraints_passed": balanced.status == "strict",
        "recommended_batched_balanced": described(balanced),
        "recommended_batched_max_throughput": described(throughput),
        "rounds": args.rounds,
        "weights": {
            "low": args.tune_low_weight,
            "medium": args.tune_medium_weight,
            "upper_throughput": args.tune_upper_throughput_weight,
            "upper_fullness": args.tune_upper_fullness_weight,
        },
        "constraints": {
            "require_low_p95_ms": args.require_low_p95_ms,
            "require_medium_p95_ms": args.require_medium_p95_ms,
            "require_upper_speedup": args.require_upper_speedup,
            "require_upper_rows_per_commit": args.require_upper_rows_per_commit,
        },
        "immediate_baseline": baseline,
        "immediate_baselines": baseline,
        "top_candidates": [s.json() for s in ranked[: args.tune_top_n]],
    }


def _ms(value: float | None) -> str:
    return "never" if value is None else f"{value:g}"


def _code(c: Candidate) -> str:
    limit = "None" if c.inline_commit_limit is None else f"{c.inline_commit_limit:g}"
    return f'SQLiteStateStore(inline_commit_limit={limit}, synchronous="{c.synchronous}")'


def _toml(c: Candidate) -> str:
    limit = '"never"' if c.inline_commit_limit is None else f"{c.inline_commit_limit:g}"
    return f'inline_commit_limit = {limit}, synchronous = "{c.synchronous}"'
