"""Score files and comparison reports: ``scores.csv`` of one run; task x model tables (Markdown, CSV) and
PNG plots across runs, each stamped with the command, date and machine that produced it."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from eval.baselines import BENCH_NAMES, PUBLISHED_CSV
from eval.provenance import provenance
from eval.run import ScoreRow
from hear_embed.atomic_files import write_bytes_atomically, write_text_atomically

SCORE_COLUMNS = ScoreRow.columns()  # the columns of a run's scores.csv (written by eval.run.write_scores)
BENCH_COLUMNS = ("model", "threads", "clip_s", "rtf_median", "params_M", "gmacs_10s")  # what the efficiency block reads
EFFICIENCY_FILE = "efficiency.csv"  # ``python -m eval bench --out results/efficiency`` writes it (default: runs/)


def read_runs(run_dirs: list[str | Path]) -> pd.DataFrame:
    """All rows of the runs' ``scores.csv`` files, with the run folder in column ``run``."""
    frames = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "scores.csv"
        if not path.is_file():
            raise ValueError(f"{run_dir} holds no scores.csv (is it the --out folder of a finished `run`?)")
        frame = pd.read_csv(path, dtype={"weights": str, "options": str})
        frame["run"] = str(run_dir)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame.duplicated(subset=["label", "task", "seed"])
    if duplicated.any():
        pairs = frame.loc[duplicated, ["label", "task", "seed"]].values.tolist()
        raise ValueError(f"the same model label, task and probe seed appear in more than one run: {pairs}; "
                         "give runs distinct --label values (runs that differ only in --seed are averaged)")
    return merge_probe_seeds(frame)


def merge_probe_seeds(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (label, task): runs of one model that differ only in the probe seed become their mean, with
    ``std`` the sample std over seeds and ``n_seeds`` how many; a single run keeps its fold std (n_seeds 1).
    The per-seed score of a k-fold task is its mean over folds."""
    rows = []
    for _, group in scores.groupby(["label", "task"], sort=False):
        row = group.iloc[0].copy()
        row["n_seeds"] = len(group)
        if len(group) > 1:
            row["score"], row["std"] = group["score"].mean(), group["score"].std(ddof=1)
            row["validation_score"] = group["validation_score"].mean()
            row["seed"] = " ".join(str(seed) for seed in sorted(group["seed"]))
            row["run"] = " ".join(group["run"])
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def comparison_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Task x model table of primary test scores as text: "0.812" or "0.812 ± 0.030" for k-fold means."""
    def cell(row) -> str:
        if row.get("n_seeds", 1) > 1:
            return f"{row.score:.3f} ± {row['std']:.3f} ({row.n_seeds} seeds)"
        return f"{row.score:.3f}" if row.n_folds <= 1 else f"{row.score:.3f} ± {row['std']:.3f}"

    cells = scores.assign(cell=scores.apply(cell, axis=1))
    table = cells.pivot(index=["task", "metric"], columns="label", values="cell").fillna("—")
    return table[list(dict.fromkeys(scores["label"]))]


def _settings_line(scores: pd.DataFrame) -> str:
    protocols = ", ".join(sorted(set(scores["protocol"].astype(str))))
    grids = ", ".join(sorted(set(scores["grid"].astype(str))))
    text = f"protocol: {protocols}; grid: {grids}; k-fold tasks: mean ± sample std over folds"
    if "n_seeds" in scores and (scores["n_seeds"] > 1).any():
        text += "; cells with (N seeds): mean ± sample std over N probe seeds (k-fold tasks: of the fold means)"
    return text


def _markdown(table: pd.DataFrame) -> str:
    header = ["task", "metric", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for (task, metric), row in table.iterrows():
        lines.append("| " + " | ".join([task, metric, *row.tolist()]) + " |")
    return "\n".join(lines)


def plot_scores(scores: pd.DataFrame, path: Path, stamp: dict[str, str]) -> None:
    """Grouped bars: primary test score per task, one bar per model, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(scores["task"]))
    labels = list(dict.fromkeys(scores["label"]))
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(figsize=(max(7.0, 1.6 * len(tasks) + 3.5), 5.0), layout="constrained")
    for k, label in enumerate(labels):
        rows = scores[scores["label"] == label].set_index("task").reindex(tasks)
        axes.bar(np.arange(len(tasks)) + (k - (len(labels) - 1) / 2) * width, rows["score"], width,
                 yerr=rows["std"].where((rows["n_folds"] > 1) | (rows["n_seeds"] > 1)), label=label, capsize=2)
    metrics = scores.drop_duplicates("task").set_index("task")["metric"].reindex(tasks)
    axes.set_xticks(np.arange(len(tasks)), [f"{t}\n({m})" for t, m in metrics.items()], fontsize=8, rotation=20,
                    ha="right", rotation_mode="anchor")
    axes.set_ylabel("primary test score")
    _title(figure, _settings_line(scores))
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _stamp_and_save(figure, path, stamp)


def _bench_row(efficiency: pd.DataFrame, label: str, module: str, params: float | None):
    """The efficiency row of a model: its own label, else its module's plain/fast path if the parameter count
    matches (another architecture of the same module has other GMACs)."""
    if label in efficiency.index:
        return efficiency.loc[label]
    for key in (f"{module} plain", f"{module} fast", module, BENCH_NAMES.get(module)):
        if key is None or key not in efficiency.index:
            continue
        row = efficiency.loc[key]
        size = row.get("params_M")
        if params is None or pd.isna(params) or size is None or pd.isna(size) or abs(float(size) - float(params)) < 0.01:
            return row
    return None


def gmacs_points(scores: pd.DataFrame, efficiency: pd.DataFrame, gmacs_column: str) -> list[tuple[str, float, float]]:
    """(label, GMACs, mean primary score over tasks) of every model the efficiency table covers."""
    efficiency = efficiency.dropna(subset=[gmacs_column]).drop_duplicates("model").set_index("model")
    points = []
    for label, rows in scores.groupby("label", sort=False):
        params = rows["params_millions"].iloc[0] if "params_millions" in rows else None
        row = _bench_row(efficiency, label, str(rows["model"].iloc[0]), params)
        if row is not None:
            points.append((label, float(row[gmacs_column]), float(rows["score"].mean())))
    return points


def efficiency_block(scores: pd.DataFrame, efficiency: pd.DataFrame) -> str:
    """Markdown table: per model, parameters, GMACs (10 s) and RTF (1 thread, shortest clip) from a bench table,
    or why a model has none."""
    one_thread = efficiency[efficiency["threads"] == efficiency["threads"].min()]
    shortest = one_thread[one_thread["clip_s"] == one_thread["clip_s"].min()].drop_duplicates("model").set_index("model")
    clip = shortest["clip_s"].iloc[0] if len(shortest) else float("nan")
    lines = [f"| model | params (M) | GMACs per 10 s | RTF (1 thread, {clip:g} s clip) |", "| --- | --- | --- | --- |"]
    for label, rows in scores.groupby("label", sort=False):
        params = rows["params_millions"].iloc[0] if "params_millions" in rows else None
        row = _bench_row(shortest, label, str(rows["model"].iloc[0]), params)
        if row is None:
            lines.append(f"| {label} | not benchmarked (no matching row: other size, or not in the bench table) | | |")
            continue
        gmacs = row.get("gmacs_10s")
        cells = [f"{row['params_M']:.2f}", "not countable" if pd.isna(gmacs) else f"{gmacs:.2f}", f"{row['rtf_median']:.4f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def published_block(path: Path = PUBLISHED_CSV) -> str:
    """Markdown table of ``published.csv`` (model x task): numbers copied from the sources named there, NOT measured
    here, on other tasks and protocols than the rows above."""
    published = pd.read_csv(path)
    published["model"] = [f"{m} ({p:g}M)" if pd.notna(p) else str(m)
                          for m, p in zip(published["model"], published["params_millions"])]
    table = published.pivot_table(index="task", columns="model", values="score", aggfunc="first")
    lines = ["| task | " + " | ".join(table.columns) + " |", "|" + " --- |" * (len(table.columns) + 1)]
    for task, row in table.iterrows():
        lines.append(f"| {task} | " + " | ".join("—" if pd.isna(v) else f"{v:.3f}" for v in row) + " |")
    protocols = "; ".join(f"{m}: {p}" for m, p in published.drop_duplicates("model")[["model", "protocol"]].values)
    return "\n".join(lines) + f"\n\nProtocols: {protocols}. Sources: `eval/baselines/published.csv`."


def not_run_block(scores: pd.DataFrame) -> str:
    """Which baseline modules have no run here, and which ran only with random weights, and why."""
    lines = []
    for module in BENCH_NAMES:
        runs = scores[scores["model"] == module]
        if runs.empty:
            lines.append(f"- `{module}`: not run (pretrained weights not available offline on this machine; "
                         "see README, \"Baselines\")")
        elif set(runs["weights"].astype(str)) <= {"random"}:
            lines.append(f"- `{module}`: random weights only (pretrained weights not available offline); "
                         "its scores measure the architecture, not the pretrained model")
    return "\n".join(lines)


def plot_score_vs_gmacs(scores: pd.DataFrame, efficiency: pd.DataFrame, path: Path, stamp: dict[str, str]) -> bool:
    """Mean primary score over tasks vs GMACs per model; False (nothing written) when no model matches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gmacs_column = next((c for c in efficiency.columns if "gmac" in c.lower()), None)
    if gmacs_column is None or "model" not in efficiency.columns:
        return False
    points = gmacs_points(scores, efficiency, gmacs_column)
    if not points:
        return False
    figure, axes = plt.subplots(figsize=(7, 5), layout="constrained")
    for label, x, y in points:
        axes.scatter(x, y)
        axes.annotate(label, (x, y), fontsize=8)
    axes.set_xscale("log")
    missing = [label for label in dict.fromkeys(scores["label"]) if label not in {point[0] for point in points}]
    note = f"\nno matching {EFFICIENCY_FILE} row (other size or not benchmarked): {', '.join(missing)}" if missing else ""
    axes.set_xlabel(f"GMACs ({gmacs_column}, from {EFFICIENCY_FILE}){note}", fontsize=8)
    axes.set_ylabel("mean primary test score over tasks")
    _title(figure, _settings_line(scores))
    _stamp_and_save(figure, path, stamp)
    return True


def _wrap(text: str, figure, points: float) -> str:
    """``text`` broken into lines that fit the figure's width at font size ``points``."""
    return "\n".join(textwrap.wrap(text, width=int(figure.get_figwidth() * 120 / points)))


def _title(figure, text: str) -> None:
    figure.suptitle(_wrap(text, figure, 8), fontsize=8)


def _stamp_and_save(figure, path: Path, stamp: dict[str, str]) -> None:
    """Stamp the command, date and machine under a constrained-layout figure and write the PNG atomically."""
    text = _wrap(stamp["command"], figure, 6) + "\n" + _wrap(f"{stamp['date']} — {stamp['machine']}", figure, 6)
    figure.supxlabel(text, fontsize=6, x=0.01, ha="left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, metadata={k.capitalize(): v for k, v in stamp.items()})
    import matplotlib.pyplot as plt

    plt.close(figure)
    write_bytes_atomically(path, buffer.getvalue())


def write_report(run_dirs: list[str | Path], out_dir: str | Path, command: str, name: str = "comparison",
                 efficiency_path: str | Path | None = None, published: bool = False) -> list[Path]:
    """``<name>.md``, ``<name>.csv`` and ``<name>_scores.png`` (+ ``<name>_score_vs_gmacs.png`` and an efficiency
    block when the bench table -- ``efficiency_path``, default ``out_dir/efficiency.csv`` -- exists and names these
    models) in ``out_dir``; ``published`` adds the published scores as a separate block. Returns the files written."""
    out_dir = Path(out_dir)
    scores = read_runs(run_dirs)
    stamp = provenance(command)
    header = [f"command: {stamp['command']}", f"date: {stamp['date']}", f"machine: {stamp['machine']}",
              f"versions: {stamp['versions']}", _settings_line(scores)]
    table = comparison_table(scores)
    written = [out_dir / f"{name}.md", out_dir / f"{name}.csv", out_dir / f"{name}_scores.png"]
    markdown = f"# {name}: primary test scores\n\n" + "".join(f"- {line}\n" for line in header)
    markdown += f"\nRows: task (primary metric); columns: model.\n\n{_markdown(table)}\n"
    efficiency_file = Path(efficiency_path) if efficiency_path is not None else out_dir / EFFICIENCY_FILE
    efficiency = pd.read_csv(efficiency_file, comment="#") if efficiency_file.is_file() else None
    if efficiency is not None and set(BENCH_COLUMNS) <= set(efficiency.columns):
        markdown += f"\n## Efficiency (from `{efficiency_file.name}`, random weights)\n\n{efficiency_block(scores, efficiency)}\n"
    if published:
        missing = not_run_block(scores)
        if missing:
            markdown += f"\n## Baselines without a pretrained run\n\n{missing}\n"
        markdown += ("\n## Published scores (NOT measured here: other tasks, splits and protocols)\n\n"
                     f"{published_block()}\n")
    write_text_atomically(written[0], markdown)
    columns = ["label", "model", "weights", "options", "params_millions", "task", "metric", "score", "std", "split", "n_folds",
               "n_seeds", "protocol", "grid", "seed", "embed_seconds", "probe_seconds"]
    write_text_atomically(written[1], "".join(f"# {line}\n" for line in header) + scores[columns].to_csv(index=False))
    plot_scores(scores, written[2], stamp)
    gmacs_plot = out_dir / f"{name}_score_vs_gmacs.png"
    if efficiency is not None and plot_score_vs_gmacs(scores, efficiency, gmacs_plot, stamp):
        written.append(gmacs_plot)
    else:
        gmacs_plot.unlink(missing_ok=True)  # a plot of an earlier table would no longer match this one
    return written
