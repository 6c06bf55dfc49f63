"""Write sweep results: results.json, results.csv, results.md and the accuracy-versus-NFE plot.

A results record is a dictionary with the run's provenance (model, task,
seed, package version, machine), its ``settings`` (``num_problems`` at least), the sweep ``rows`` (see
:mod:`orderpolicy.evaluation.sweep`) and the equal-NFE ``comparisons``.
JSON and CSV keep full precision; the Markdown table rounds as
the formats in :data:`TABLE_COLUMNS` set.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from orderpolicy import __version__

ROW_FIELDS = ("strategy", "setting", "kind", "label", "problems", "accuracy", "consistency", "mean_steps",
              "mean_nfe", "max_steps", "tokens_per_second", "seconds", "pareto")
TABLE_COLUMNS = (  # header, row key, format
    ("strategy", "strategy", "{}"),
    ("setting", "setting", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("consistency", "consistency", "{:.4f}"),
    ("mean steps", "mean_steps", "{:.3f}"),
    ("mean NFE", "mean_nfe", "{:.3f}"),
    ("max steps", "max_steps", "{}"),
    ("tokens/s", "tokens_per_second", "{:.1f}"),
    ("Pareto", "pareto", "{}"),
)
OUTPUT_FILES = ("results.json", "results.csv", "results.md", "accuracy_vs_nfe.png")


def machine_info(device: str | torch.device) -> dict:
    """Describe the machine a measurement ran on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def provenance(model: str | None, task: str, seed: int, device: str | torch.device) -> dict:
    """Return the fields every results file carries; ``model=None`` is the shipped MDM."""
    return {
        "model": "shipped" if model is None else str(model),
        "task": task,
        "seed": seed,
        "version": __version__,
        "machine": machine_info(device),
    }


def write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Write one line per row with the fields of :data:`ROW_FIELDS`, floats at full precision."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict]) -> str:
    """Render rows as a Markdown table with the columns of :data:`TABLE_COLUMNS`."""
    lines = ["| " + " | ".join(header for header, _, _ in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(TABLE_COLUMNS))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: dict) -> str:
    """Render one equal-NFE comparison as a heading, a sentence and a table."""
    target = comparison["target_nfe"]
    if comparison["reference"] is None:
        lines = [f"### Comparison at ~{target:g} NFE", "",
                 f"No learned policy in this sweep; each rule at the setting whose mean NFE is closest to {target:g}."]
    else:
        lines = [f"### Comparison at ~{target:.2f} NFE: {comparison['reference']}", "",
                 f"{comparison['reference']} reaches accuracy {comparison['reference_accuracy']:.4f} at mean NFE "
                 f"{target:.3f}. Each rule at its setting with the closest mean NFE:"]
    lines += [
        "",
        "| strategy | nearest setting | mean NFE | accuracy | interpolated accuracy at target NFE |",
        "|---|---|---:|---:|---:|",
    ]
    for match in comparison["matches"]:
        interpolated = match["interpolated_accuracy"]
        interpolated_text = "outside measured range" if interpolated is None else f"{interpolated:.4f}"
        lines.append(f"| {match['strategy']} | {match['setting']} | {match['mean_nfe']:.3f} | "
                     f"{match['accuracy']:.4f} | {interpolated_text} |")
    lines += ["", "Interpolated accuracy: linear in mean NFE between the rule's two neighbouring measured settings; "
              "it is an estimate, not a measured run."]
    return "\n".join(lines)


def results_markdown(record: dict) -> str:
    """Render the whole results record as a Markdown page."""
    machine = record["machine"]
    header = [
        f"# Accuracy versus NFE on {record['task']}",
        "",
        f"Model: {record['model']}. Problems: {record['settings']['num_problems']}. Seed: {record['seed']}. "
        f"orderpolicy {record['version']}, torch {machine['torch']}, device {machine['device']} "
        f"({machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}).",
        "",
        "Pareto: no other row reaches at least the same accuracy with at most the same mean NFE.",
        "",
    ]
    parts = ["\n".join(header), markdown_table(record["rows"]), "", "## Comparison at equal NFE", ""]
    parts += [comparison_markdown(comparison) + "\n" for comparison in record["comparisons"]]
    return "\n".join(parts)


def plot_accuracy_vs_nfe(path: Path, rows: Sequence[dict], title: str) -> None:
    """Plot accuracy against mean NFE: a line per rule, a star per learned policy, the Pareto front dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(figure)  # draw with Agg without touching pyplot's global backend
    axes = figure.add_subplot()
    for name in dict.fromkeys(row["strategy"] for row in rows):
        curve = sorted((row for row in rows if row["strategy"] == name), key=lambda row: row["mean_nfe"])
        nfe = [row["mean_nfe"] for row in curve]
        accuracy = [row["accuracy"] for row in curve]
        if curve[0]["kind"] == "learned":
            axes.plot(nfe, accuracy, linestyle="none", marker="*", markersize=14, label=name)
        else:
            axes.plot(nfe, accuracy, marker="o", markersize=4, label=name)

    front = sorted((row for row in rows if row["pareto"]), key=lambda row: (row["mean_nfe"], row["accuracy"]))
    if front:
        # Extend the last level to the costliest row: nothing beyond the front's end does better.
        front_nfe = [row["mean_nfe"] for row in front] + [max(row["mean_nfe"] for row in rows)]
        front_accuracy = [row["accuracy"] for row in front] + [front[-1]["accuracy"]]
        axes.step(front_nfe, front_accuracy, where="post", color="black", linestyle="--", linewidth=1,
                  label="Pareto front")
        axes.scatter(front_nfe[:-1], front_accuracy[:-1], s=120, facecolors="none", edgecolors="black", zorder=3)

    axes.set_xscale("log", base=2)
    axes.set_xlabel("mean NFE (denoiser calls per problem)")
    axes.set_ylabel("accuracy (strict)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=150)


def write_reports(out_dir: str | Path, record: dict) -> dict[str, Path]:
    """Write the four output files into ``out_dir`` (created if needed); return their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUTPUT_FILES}
    write_json(paths["results.json"], record)
    write_csv(paths["results.csv"], record["rows"])
    paths["results.md"].write_text(results_markdown(record), encoding="utf-8")
    title = f"{record['task']}, {record['settings']['num_problems']} problems, model {record['model']}"
    plot_accuracy_vs_nfe(paths["accuracy_vs_nfe.png"], record["rows"], title)
    return paths
