"""Print a shadow comparison for people (`textq models shadow NAME`)."""

from __future__ import annotations

import typer

from shared.model_schemas import ShadowReport


def print_shadow_report(report: ShadowReport) -> None:
    """Print the comparison's figures, and for sentiment its confusion matrix."""
    typer.echo(
        f"{report.task.value}: {report.default} (default) vs {report.candidate} "
        f"(shadow on {report.shadow_fraction:.0%} of its texts), last {report.window_h:g} h: "
        f"{report.items_compared} texts compared{' (the newest)' if report.limited else ''}"
    )
    if report.label_agreement is not None:
        typer.echo(
            f"label agreement {report.label_agreement:.1%}; |Δscore| of the default's label: "
            f"mean {report.mean_abs_delta_score:.4f}, max {report.max_abs_delta_score:.4f}"
        )
    if report.labels and report.confusion:
        width = max(len(label) for label in [*report.labels, report.default])
        typer.echo(
            f"{report.default} \\ {report.candidate}".ljust(width + 2)
            + " ".join(label.rjust(width) for label in report.labels)
        )
        for label, row in zip(report.labels, report.confusion, strict=True):
            typer.echo(label.ljust(width + 2) + " ".join(str(n).rjust(width) for n in row))
    if report.mean_rouge_l_f is not None:
        ratio = report.mean_length_ratio
        typer.echo(
            f"ROUGE-L F mean {report.mean_rouge_l_f:.3f}; length ratio (candidate / default, "
            f"words) mean {'-' if ratio is None else f'{ratio:.2f}'}"
        )
