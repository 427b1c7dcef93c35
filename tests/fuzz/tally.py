"""What a fuzz run did: inputs tried and requests sent per operation, and the statuses that came back.

One tally per pytest session; the conftest prints it as a table at the end and, with
RTSERVE_FUZZ_REPORT set, writes it there as markdown.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Tally:
    inputs: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    current: str = ""

    def input(self, operation: str) -> None:
        self.current = operation
        self.inputs[operation] += 1

    def response(self, status: int) -> None:
        self.requests[self.current] += 1
        self.statuses[self.current][status] += 1

    def failure(self, operation: str) -> None:
        self.failures[operation] += 1

    def table(self) -> str:
        """Markdown: one row per operation, then the totals."""
        lines = ["| operation | inputs tried | requests | statuses | failing inputs |", "|---|---|---|---|---|"]
        total_statuses: Counter[int] = Counter()
        for op in sorted(self.inputs):
            total_statuses.update(self.statuses[op])
            lines.append(f"| `{op}` | {self.inputs[op]:,} | {self.requests[op]:,} | {_statuses(self.statuses[op])} | {self.failures[op]} |")
        lines.append(
            f"| **all** | **{sum(self.inputs.values()):,}** | **{sum(self.requests.values()):,}** "
            f"| {_statuses(total_statuses)} | {sum(self.failures.values())} |"
        )
        if self.resets:
            lines.append(f"\nThe admin server's routes were put back {self.resets} times.")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.table() + "\n", encoding="utf-8")


def _statuses(counts: Counter[int]) -> str:
    return ", ".join(f"{status}: {n:,}" for status, n in sorted(counts.items()))


TALLY = Tally()
