"""QA gates of the command line: ``--fail-under S`` (SSIM) and ``--fail-on VERDICT,...``.

A gate is met by a batch when every comparison succeeded, none has SSIM under ``fail_under``
and none has a verdict of ``fail_on``; a comparison that failed (or was canceled, or a pair
refused at submission) has no score to pass with, so it fails any gate, and so does an image in
only one of the two folders (unless ``allow_unmatched``). With no gate set, nothing fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["VERDICTS", "Gate", "GateOutcome", "evaluate", "parse_fail_on", "parse_threshold"]

#: The engine's verdicts (``core.imaging.VERDICTS``; a test keeps the two equal: the client
#: does not import the engine).
VERDICTS: Final = ("identical", "localized_edit", "global_change", "misaligned", "different")


def parse_threshold(text: str) -> float:
    """Parse an SSIM threshold: a fraction ``0.98`` or a percentage ``98%``; returns 0..1.

    Raises ValueError when malformed or outside 0..1 (so ``99`` is refused: write ``0.99`` or
    ``99%``).
    """
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"--fail-under takes a number like 0.98 or 98%, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--fail-under must be within 0..1 (or 0%..100%), got {text!r}")
    return value


def parse_fail_on(text: str) -> frozenset[str]:
    """Parse ``localized_edit,different`` into a set of verdicts; ValueError for an unknown or
    empty list."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if not names:
        raise ValueError(f"--fail-on takes verdicts separated by commas, got {text!r}")
    unknown = sorted(names - set(VERDICTS))
    if unknown:
        raise ValueError(
            f"--fail-on: unknown verdict {', '.join(map(repr, unknown))} "
            f"(verdicts: {', '.join(VERDICTS)})"
        )
    return frozenset(names)


@dataclass(frozen=True)
class Gate:
    """What a batch must meet.

    Parameters
    ----------
    fail_under
        Lowest SSIM accepted, 0..1 (None: no SSIM gate).
    fail_on
        Verdicts that fail the gate (empty: no verdict gate).
    allow_unmatched
        Whether images in only one folder are accepted.
    """

    fail_under: float | None = None
    fail_on: frozenset[str] = field(default_factory=frozenset)
    allow_unmatched: bool = False

    @property
    def active(self) -> bool:
        """Whether any gate is set."""
        return self.fail_under is not None or bool(self.fail_on)

    def flags(self, comparison: Mapping[str, Any]) -> list[str]:
        """Why one comparison does not meet the gate (empty when it does, or no gate is set)."""
        if not self.active:
            return []
        if comparison.get("state") != "succeeded":
            return [str(comparison.get("state", "failed"))]
        result = comparison.get("result") or {}
        reasons = []
        ssim = result.get("ssim")
        if self.fail_under is not None and (ssim is None or float(ssim) < self.fail_under):
            reasons.append(f"SSIM under {self.fail_under * 100:.2f} %")
        if result.get("verdict") in self.fail_on:
            reasons.append(str(result["verdict"]))
        return reasons


@dataclass(frozen=True)
class GateOutcome:
    """The gate over a whole batch: ``passed``, and the ``reasons`` (one phrase each) if not."""

    passed: bool
    reasons: list[str]


def evaluate(
    gate: Gate, comparisons: Iterable[Mapping[str, Any]], *, unmatched: int, refused: int
) -> GateOutcome:
    """Apply ``gate`` to every comparison of a batch, the ``unmatched`` images (>= 0) and the
    pairs ``refused`` at submission (>= 0)."""
    if not gate.active:
        return GateOutcome(True, [])
    counts: dict[str, int] = {}
    for comparison in comparisons:
        for reason in gate.flags(comparison):
            counts[reason] = counts.get(reason, 0) + 1
    reasons = [f"{count} {reason}" for reason, count in sorted(counts.items())]
    if refused:
        reasons.append(f"{refused} refused at submission")
    if unmatched and not gate.allow_unmatched:
        reasons.append(f"{unmatched} in only one folder")
    return GateOutcome(not reasons, reasons)
