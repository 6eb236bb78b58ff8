"""The bench's outputs: results.csv / results.json (one row per run), results.md (per-method
mean +- std), plots (PNG) and gallery.html (self-contained: relative paths, no network).
"""

from __future__ import annotations

import csv
import html
import io
import math
import statistics
from pathlib import Path
from typing import Any

from headgen.bench.config import BenchConfig
from headgen.rundir import atomic_write, atomic_write_text

FIXED = ["key", "method", "prompt", "seed", "status", "error", "prior", "device", "wall_seconds", "total_seconds",
         "eval_seconds", "its", "peak_cpu_rss_mb", "peak_gpu_mb"]
TAIL = ["run_dir", "log", "notes"]
SUMMARY = [("wall_seconds", "wall s"), ("total_seconds", "stages s"), ("its", "it/s"),
           ("peak_cpu_rss_mb", "peak RSS MB"), ("peak_gpu_mb", "peak GPU MB")]
LOWER_IS_BETTER = {"geometry_error", "identity_distance", "landmark_error_px", "janus_faces"}
PLOTS = {"time": "time_per_method.png", "metrics": "metrics_per_method.png", "loss": "loss_curves.png"}


# ------------------------------------------------------------------------------- rows
def stage_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for s in row.get("stages", []):
            if s["name"] not in names:
                names.append(s["name"])
    return names


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for k in row.get("metrics", {}):
            if k not in names:
                names.append(k)
    return names


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """The CSV form: fixed columns, seconds/<stage>, its/<stage>, one column per metric."""
    flat = {k: row.get(k) for k in FIXED}
    for s in row.get("stages", []):
        flat[f"seconds/{s['name']}"] = s["seconds"]
        flat[f"its/{s['name']}"] = s["its"]
    flat.update(row.get("metrics", {}))
    flat.update({k: row.get(k) for k in TAIL})
    return flat


def columns(rows: list[dict[str, Any]]) -> list[str]:
    stages = stage_names(rows)
    return [*FIXED, *(f"seconds/{n}" for n in stages), *(f"its/{n}" for n in stages), *metric_names(rows), *TAIL]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in flat_row(row).items()})
    return atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------- per-method summary
def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get("metrics", {}).get(key, row.get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(stat: tuple[float, float] | None) -> str:
    if stat is None:
        return "-"
    m, s = stat
    digits = 1 if abs(m) >= 100 else 2 if abs(m) >= 1 else 4
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def summary_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per method: runs, failures, then mean +- std over its finished runs."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stats = [(k, label) for k, label in SUMMARY if any(_values(rows, k))]
    metrics = metric_names(rows)
    header = ["method", "runs", "failed", *(label for _, label in stats),
              *(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics)]
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] == "ok"]
        cells = [method, str(len(mine)), str(len(mine) - len(ok))]
        cells += [_fmt(mean_std(_values(ok, k))) for k, _ in stats]
        cells += [_fmt(mean_std(_values(ok, m))) for m in metrics]
        table.append(cells)
    return header, table


def write_markdown(path: Path, rows: list[dict[str, Any]], cfg: BenchConfig) -> Path:
    header, table = summary_table(rows)
    seeds = ", ".join(str(s) for s in cfg.seeds)
    lines = [f"# Bench {cfg.name}", "",
             f"{len(cfg.methods)} methods x {len(cfg.prompts)} prompts x {len(cfg.seeds)} seeds ({seeds}); "
             f"prior {cfg.prior}; mean ± std over the finished runs of each method.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", "", "| method | prompt | seed | error |", "| --- | --- | --- | --- |"]
        for r in failed:
            err = (r.get("error") or "").splitlines()[0][:300] if r.get("error") else ""
            lines.append(f"| {r['method']} | {r['prompt']} | {r['seed']} | {err.replace('|', '/')} |")
    notes = sorted({n for r in rows for n in (r.get("notes") or "").split("; ") if n})
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    lines += ["", "Metrics: " + METRIC_DOC]
    return atomic_write_text(path, "\n".join(lines) + "\n")


METRIC_DOC = (
    "clip_b32 / clip_l14: 100 x cosine(view, prompt) averaged over 8 views around the head (elevation 5, every "
    "45 degrees); clip_demo: the demo prior's CLIP analogue (not a text model); psnr (dB), silhouette_iou, "
    "geometry_error (head heights), identity_distance, landmark_error_px (pixels at gt_resolution, 128 by "
    "default): against the demo prior's target of the prompt; psnr_front / psnr_side / psnr_back: PSNR of a "
    "24-frame turntable per azimuth sector; janus_faces: turntable frames with |azimuth| >= 120 where OpenCV's "
    "Haar frontal-face cascade finds a face, front_face: 1 when it finds one at azimuth 0; times are wall-clock "
    "seconds, it/s over optimisation stages."
)


# ------------------------------------------------------------------------------- plots
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save_png(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def plot_time(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Mean seconds per stage per method, stacked."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = _figure(max(5.0, 1.4 * len(methods) + 2), 4)
    ax = fig.subplots()
    for i, method in enumerate(methods):
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        bottom = 0.0
        for name in stage_names(ok):
            secs = [s["seconds"] for r in ok for s in r["stages"] if s["name"] == name]
            mean = statistics.fmean(secs) if secs else 0.0
            ax.bar(i, mean, bottom=bottom, color=f"C{stage_names(rows).index(name) % 10}", edgecolor="white",
                   label=name)
            bottom += mean
        if not ok:
            ax.text(i, 0, "all failed", ha="center", va="bottom", rotation=90)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8, title="stage")
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_ylabel("seconds per run (mean)")
    ax.set_title("time per method")
    return _save_png(fig, path)


def plot_metrics(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One panel per metric: mean +- std per method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = [*metric_names(rows), "wall_seconds", "peak_cpu_rss_mb"]
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig = _figure(4.2 * cols, 3.2 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        means, stds = [], []
        for method in methods:
            stat = mean_std(_values([r for r in rows if r["method"] == method and r["status"] == "ok"], key))
            means.append(stat[0] if stat else float("nan"))
            stds.append(stat[1] if stat else 0.0)
        ax.bar(range(len(methods)), means, yerr=stds, capsize=4, color=[f"C{i % 10}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
        ax.set_title(key + (" (lower is better)" if key in LOWER_IS_BETTER else ""), fontsize=9)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _save_png(fig, path)


def read_loss(run_dir: Path, stage: str) -> tuple[list[float], list[float]]:
    """(steps, train/loss) of one optimisation stage from its CSV log (every session, in order)."""
    steps: list[float] = []
    losses: list[float] = []
    logs = run_dir / "stages" / stage / "logs"
    for path in sorted(logs.glob("**/metrics.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for rec in csv.DictReader(f):
                if rec.get("train/loss") not in (None, ""):
                    steps.append(float(rec["step"]))
                    losses.append(float(rec["train/loss"]))
    return steps, losses


def plot_losses(path: Path, rows: list[dict[str, Any]], bench_dir: Path) -> Path:
    """Total loss per step: one panel per (method, optimisation stage), one line per run."""
    panels: dict[tuple[str, str], list[tuple[str, list[float], list[float]]]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        for s in row.get("stages", []):
            if s.get("kind") != "optimize":
                continue
            steps, losses = read_loss(bench_dir / row["run_dir"], s["name"])
            if steps:
                label = f"{row['prompt'][:28]} s{row['seed']}"
                panels.setdefault((row["method"], s["name"]), []).append((label, steps, losses))
    cols = min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    fig = _figure(4.5 * cols, 3.2 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    if not panels:
        axes[0].text(0.5, 0.5, "no optimisation stage in this bench", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, ((method, stage), lines) in zip(axes, panels.items()):
        for label, steps, losses in lines:
            ax.plot(steps, losses, label=label, linewidth=1)
        if all(v > 0 for _, _, losses in lines for v in losses):
            ax.set_yscale("log")
        ax.set_title(f"{method} / {stage}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=6)
    for ax in axes[max(1, len(panels)):]:
        ax.set_visible(False)
    return _save_png(fig, path)


# ------------------------------------------------------------------------------- gallery
def _asset(row: dict[str, Any], bench_dir: Path, name: str) -> str | None:
    rel = row.get("assets", {}).get(name)
    if row["status"] != "ok" or not rel or not row.get("run_dir"):
        return None
    path = Path(row["run_dir"]) / rel
    return path.as_posix() if (bench_dir / path).is_file() else None


def _cell(row: dict[str, Any] | None, bench_dir: Path) -> str:
    if row is None:
        return "<td class='missing'>not run</td>"
    e = html.escape
    parts = [f"<div class='run'><div class='cap'>seed {row['seed']} · {e(row['status'])}"]
    metrics = row.get("metrics", {})
    shown = [f"{k} {v:.3g}" for k, v in metrics.items() if isinstance(v, (int, float))][:4]
    if shown:
        parts.append(" · " + e(", ".join(shown)))
    parts.append("</div>")
    if row["status"] != "ok":
        err = (row.get("error") or "")[:400]
        log = f" (<a href='{e(row['log'])}'>log</a>)" if row.get("log") else ""
        parts.append(f"<pre class='err'>{e(err)}</pre>{log}")
    preview = _asset(row, bench_dir, "preview")
    turntable = _asset(row, bench_dir, "turntable")
    if preview:
        parts.append(f"<a href='{e(preview)}'><img src='{e(preview)}' alt='preview'></a>")
    if turntable:
        parts.append(f"<video src='{e(turntable)}' controls loop muted playsinline preload='metadata'></video>")
    parts.append("</div>")
    return "<td>" + "".join(parts) + "</td>"


STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:13px}
th{background:#f2f2f2}
.run{margin-bottom:8px}
.run img{max-width:360px;display:block}
.run video{max-width:240px;display:block;margin-top:4px}
.cap{font-size:12px;color:#555}
.err{color:#a00;white-space:pre-wrap;max-width:360px;font-size:11px}
.plots img{max-width:100%;margin:6px 0}
"""


def write_gallery(path: Path, rows: list[dict[str, Any]], cfg: BenchConfig, bench_dir: Path) -> Path:
    e = html.escape
    methods = list(dict.fromkeys([*cfg.methods, *(r["method"] for r in rows)]))
    prompts = list(dict.fromkeys([*cfg.prompts, *(r["prompt"] for r in rows)]))
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault((r["prompt"], r["method"]), []).append(r)
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>bench {e(cfg.name)}</title>",
           f"<style>{STYLE}</style></head><body>", f"<h1>Bench {e(cfg.name)}</h1>",
           f"<p>prior {e(cfg.prior)} · {len(rows)} runs · files: <a href='results.csv'>results.csv</a>, "
           "<a href='results.json'>results.json</a>, <a href='results.md'>results.md</a></p>",
           "<h2>Summary (mean ± std per method)</h2>"]
    header, table = summary_table(rows)
    out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in table]
    out.append("</table>")
    out.append("<h2>Results: one row per prompt</h2><table><tr><th>prompt</th>"
               + "".join(f"<th>{e(m)}</th>" for m in methods) + "</tr>")
    for prompt in prompts:
        out.append(f"<tr><th>{e(prompt)}</th>")
        for method in methods:
            runs = sorted(by_cell.get((prompt, method), []), key=lambda r: r["seed"])
            inner = "".join(_cell(r, bench_dir).removeprefix("<td>").removesuffix("</td>") for r in runs)
            out.append(f"<td>{inner}</td>" if runs else _cell(None, bench_dir))
        out.append("</tr>")
    out.append("</table><h2>Plots</h2><div class='plots'>")
    out += [f"<img src='{e(name)}' alt='{e(key)}'>" for key, name in PLOTS.items() if (bench_dir / name).is_file()]
    out.append(f"</div><p class='cap'>{e(METRIC_DOC)}</p></body></html>")
    return atomic_write_text(path, "\n".join(out) + "\n")


# ------------------------------------------------------------------------------- all
def write_report(bench_dir: Path, rows: list[dict[str, Any]], cfg: BenchConfig) -> dict[str, Path]:
    """Write every output file (results.json is kept up to date by the runner) and return them."""
    written = {"csv": write_csv(bench_dir / "results.csv", rows),
               "md": write_markdown(bench_dir / "results.md", rows, cfg),
               "time": plot_time(bench_dir / PLOTS["time"], rows),
               "metrics": plot_metrics(bench_dir / PLOTS["metrics"], rows),
               "loss": plot_losses(bench_dir / PLOTS["loss"], rows, bench_dir)}
    written["gallery"] = write_gallery(bench_dir / "gallery.html", rows, cfg, bench_dir)
    return written


__all__ = ["columns", "flat_row", "summary_table", "write_report"]
