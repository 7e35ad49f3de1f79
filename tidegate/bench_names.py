"""The benchmark names of CONTRACTS.md section 4 (kept apart so ``--help`` imports nothing)."""

from __future__ import annotations

BENCH_NAMES: tuple[str, ...] = (
    "produce",
    "consume",
    "lite-topics",
    "fanin",
    "schedule",
    "recovery",
    "submit",
    "relay",
)
