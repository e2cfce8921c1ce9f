"""What a run finds in its scores besides the scores: NaN/Inf, log2fc, integrity.

:class:`Findings` collects, from live blocks and from a resumed run's replayed
blocks alike, the NaN/Inf values of the selected predictions (the first one named by
its variant, bin and track), the log2fc scores that are NaN or infinite, and the
integrity checks (:class:`perturbscore.integrity.IntegrityChecker`) of the first
output table's raw scores (``# n S``: rows of a block, selected tracks).
"""

from __future__ import annotations

from typing import Any

from .errors import PerturbscoreError
from .integrity import EXIT_FLAGGED, IntegrityChecker
from .integrity_keys import keys_in_several_groups
from .messages import count
from .plan import Prepared


def variant_where(prep: Prepared, batch: int, row: int) -> str:
    """A variant for people: its ID values and its 1-based line in the variant table."""
    b = prep.batches[batch]
    ids = " ".join(str(v) for v in b.ids.row(row))
    line = row + 2 if b.variants_path.suffix.lower() != ".parquet" else row + 1
    kind = "line" if b.variants_path.suffix.lower() != ".parquet" else "row"
    return f"variant {ids} ({kind} {line} of {b.variants_path})"


class Findings:
    """NaN/Inf, log2fc and integrity findings, the same from live and replayed blocks."""

    def __init__(
        self, prep: Prepared, rtol: float = 1e-5, atol: float = 1e-6, max_examples: int = 10
    ) -> None:
        self.prep = prep
        self.nonfinite: dict[str, tuple[int, str]] = {}
        self.bad_log2 = 0
        self.bad_log2_inputs = 0  # of bad_log2, those from NaN/Inf inputs
        self.bad_log2_unknown = 0  # of bad_log2, those of blocks logged without a cause
        keys = {(b.group, b.number): b.keys for b in prep.batches}
        by_group: dict[str, list[str]] = {}
        for b in prep.batches:
            by_group.setdefault(b.group, []).extend(b.keys)
        first = prep.outputs[0]
        self.table = (first.aggregation.spec, first.statistic)  # the one the checks read
        self.checker = IntegrityChecker(
            shared_keys=keys_in_several_groups(by_group) if len(by_group) > 1 else None,
            key_of=lambda g, n, r: keys[(g, n)][r],
            scores_of=f"{self.table[0]}/{self.table[1]}",
            track_names=[str(t) for t in prep.tracks["identifier"].tolist()],
            rtol=rtol,
            atol=atol,
            max_examples=max_examples,
        )
        self.slots = [self.checker.slots(b.keys) for b in prep.batches]

    def block(self, batch: int, start: int, identical: Any, scores: dict[Any, Any]) -> None:
        """Integrity checks of one block (raw scores, before the out-of-field policy)."""
        b = self.prep.batches[batch]
        stop = start + len(identical)
        self.checker.update(
            b.group,
            b.number,
            start,
            identical,
            None if b.classes is None else b.classes[start:stop],
            scores[(b.group, *self.table)],
            b.keys[start:stop],
            table=str(b.variants_path),
            slots=self.slots[batch][start:stop],
        )

    def integrity(self, warnings: list[str]) -> dict[str, Any]:
        """The checks' result for the manifest; a warning when rows were flagged."""
        result = self.checker.finish()
        if not result["clean"]:
            counts = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in result["findings"].items() if v
            )
            warnings.append(
                f"integrity checks flagged rows ({counts}): predictions may be attached to the "
                f"wrong variants or positions are wrong; 'perturbscore check {self.prep.out}' "
                "lists the first offenders"
            )
        return self.with_nonfinite(result)

    def with_nonfinite(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` (the integrity checks') with the NaN/Inf found, if any, as
        ``nonfinite`` ``{path: {"values", "first"}}``, and then not clean: what a run
        refuses by default (``--nan error``) is no clean bill of health."""
        if self.nonfinite:
            result["nonfinite"] = {
                path: {"values": n, "first": where} for path, (n, where) in self.nonfinite.items()
            }
            result["clean"] = False
            result["exit_code"] = EXIT_FLAGGED
        return result

    def add(
        self,
        batch: int,
        found: list[tuple[str, int, tuple[int, int, int]]],
        bad: int,
        bad_inputs: int | None = 0,
    ) -> None:
        """One block's findings; ``bad_inputs`` None: a block replayed from the resume log
        of an earlier version, which did not record the cause of its ``bad`` scores."""
        for source, n, (row, b, col) in found:
            prev = self.nonfinite.get(source)
            tracks = self.prep.tracks
            where = (
                prev[1]
                if prev
                else (
                    f"{variant_where(self.prep, batch, row)}, bin {b}, track "
                    f"{tracks['index'][col]} ({tracks['identifier'][col]})"
                )
            )
            self.nonfinite[source] = ((prev[0] if prev else 0) + n, where)
        self.bad_log2 += bad
        if bad_inputs is None:
            self.bad_log2_unknown += bad
        else:
            self.bad_log2_inputs += bad_inputs

    def conclude(self, warnings: list[str]) -> None:
        prep = self.prep
        if self.nonfinite:
            detail = "; ".join(
                f"{p}: {count(c, 'value')}, first at {w}" for p, (c, w) in self.nonfinite.items()
            )
            if prep.opts.nan_policy == "error":
                raise PerturbscoreError(
                    f"NaN or Inf in the selected predictions: {detail}. Fix the predictions, or "
                    "pass --nan propagate to carry them into the scores."
                )
            warnings.append(f"NaN/Inf passed through (--nan propagate): {detail}")
        if self.bad_log2:
            warnings.append(self.log2fc_warning())

    def log2fc_warning(self) -> str:
        """The log2fc scores that are NaN or infinite, by cause: NaN/Inf in the predictions
        (their aggregate is NaN or infinite), or agg + pseudocount <= 0."""
        inputs, unknown = self.bad_log2_inputs, self.bad_log2_unknown
        causes = [
            (
                inputs,
                "because the REF or ALT aggregate is (NaN/Inf in the predictions, passed "
                "through by --nan propagate)",
            ),
            (
                self.bad_log2 - inputs - unknown,
                "because agg + pseudocount <= 0 (pseudocount "
                f"{self.prep.config.pseudocount})",
            ),
            (
                unknown,
                "in blocks resumed from a log of an earlier version, which did not record "
                "why (NaN/Inf in the predictions, or agg + pseudocount <= 0)",
            ),
        ]
        said = [
            f"{count(n, 'score')} {'is' if n == 1 else 'are'} NaN or infinite {why}"
            for n, why in causes
            if n
        ]
        return "log2fc: " + "; ".join(said)
