"""The leaderboard: several runs (one per model) merged into a markdown table, a JSON file and an HTML page.

The HTML page is self-contained (no network): plotly's JavaScript is inlined once, the figures (per-env
pass@1 with 95% CIs, pass@k curves per env) are plotly figures, and the table sorts when a header is
clicked (a few lines of inline JavaScript). Runs whose per-env task data (content hashes) or k differ
are not comparable: the leaderboard says so instead of ranking them silently.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunSummary:
    """One run as the leaderboard sees it."""

    label: str
    path: str
    fingerprint: str
    scores: dict[str, Any]
    timing: dict[str, Any]
    policy: dict[str, Any]
    env_data: dict[str, tuple[str, int]]  # env name -> (tasks digest, k)


def load_run(run_dir: str | Path) -> RunSummary:
    run = Path(run_dir)
    for name in ("results.json", "manifest.json"):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run} has no {name}: not a `gym-nemo eval` output directory")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    envs = manifest["reproducible"]["envs"]
    return RunSummary(
        label=results["label"],
        path=str(run),
        fingerprint=manifest["fingerprint"],
        scores=results["scores"],
        timing=results["timing"],
        policy=manifest["reproducible"]["policy"],
        env_data={name: (info["tasks_digest"], info["k"]) for name, info in envs.items()},
    )


def build_leaderboard(run_dirs: list[str | Path]) -> dict[str, Any]:
    """The merged leaderboard as plain data (what ``leaderboard.json`` holds), ranked by overall pass@1."""
    runs = [load_run(d) for d in run_dirs]
    labels = [r.label for r in runs]
    for r in runs:  # two runs of one model: tell them apart by directory
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({Path(r.path).name})"
    env_names = sorted({name for r in runs for name in r.scores["envs"]})
    notes = []
    for name in env_names:
        data = {r.label: r.env_data.get(name) for r in runs}
        if len({d for d in data.values() if d is not None}) > 1:
            notes.append(f"{name}: runs used different tasks or k ({data}); its scores are not comparable")
        missing = [label for label, d in data.items() if d is None]
        if missing:
            notes.append(f"{name}: not in the runs of {missing}")
    runs.sort(key=lambda r: -(r.scores["overall"].get("pass@1") or 0.0))
    entries = []
    for rank, r in enumerate(runs, 1):
        entries.append(
            {
                "rank": rank,
                "label": r.label,
                "path": r.path,
                "fingerprint": r.fingerprint,
                "policy": r.policy,
                "overall": r.scores["overall"],
                "envs": r.scores["envs"],
                "timing": r.timing,
            }
        )
    return {"envs": env_names, "comparable": not notes, "notes": notes, "runs": entries}


def _fmt(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _columns(board: dict[str, Any]) -> list[str]:
    return [
        "#",
        "model",
        "overall pass@1 [95% CI]",
        *board["envs"],
        "mean reward",
        "infra-error rate",
        "tokens",
        "time (s)",
    ]


def _row(board: dict[str, Any], run: dict[str, Any]) -> list[str]:
    o, t = run["overall"], run["timing"]["overall"]
    per_env = []
    for name in board["envs"]:
        s = run["envs"].get(name)
        per_env.append(_fmt(s.get("pass@1"), s.get("pass@1_ci")) if s else "–")
    tokens = "–" if t.get("policy_tokens") is None else str(t["policy_tokens"])
    return [
        str(run["rank"]),
        run["label"],
        _fmt(o.get("pass@1"), o.get("pass@1_ci")),
        *per_env,
        _fmt(o.get("mean_reward")),
        f"{o['infra_error_rate']:.3f}",
        tokens,
        f"{t['duration_s']:.1f}",
    ]


def to_markdown(board: dict[str, Any]) -> str:
    """The leaderboard as a markdown table (per-env cells: pass@1 [95% CI])."""
    columns = _columns(board)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _row(board, run)) + " |" for run in board["runs"]]
    lines += [f"\n> {note}" for note in board["notes"]]
    return "\n".join(lines) + "\n"


def _figures(board: dict[str, Any]) -> list[Any]:
    """Per-env pass@1 with CI error bars, and pass@k curves per env (plotly figures)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    envs = ["overall", *board["envs"]]
    bars = go.Figure()
    for run in board["runs"]:
        scores = [run["overall"], *(run["envs"].get(e, {}) for e in board["envs"])]
        values = [s.get("pass@1") for s in scores]
        cis = [s.get("pass@1_ci") or [v, v] for s, v in zip(scores, values, strict=True)]
        bars.add_trace(
            go.Bar(
                name=run["label"],
                x=envs,
                y=values,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [None if v is None else ci[1] - v for v, ci in zip(values, cis, strict=True)],
                    "arrayminus": [None if v is None else v - ci[0] for v, ci in zip(values, cis, strict=True)],
                },
            )
        )
    bars.update_layout(
        title="pass@1 per env (95% bootstrap CI)", barmode="group", yaxis={"range": [0, 1.05], "title": "pass@1"}
    )
    cols = min(3, len(envs))
    rows = -(-len(envs) // cols)
    curves = make_subplots(rows=rows, cols=cols, subplot_titles=envs)
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880"]
    for i, run in enumerate(board["runs"]):
        color = palette[i % len(palette)]
        for j, env in enumerate(envs):
            scores = run["overall"] if env == "overall" else run["envs"].get(env, {})
            points = {int(k): v for k, v in (scores.get("pass_at_k") or {}).items() if v is not None}
            curves.add_trace(
                go.Scatter(
                    x=sorted(points),
                    y=[points[k] for k in sorted(points)],
                    mode="lines+markers",
                    name=run["label"],
                    legendgroup=run["label"],
                    showlegend=j == 0,
                    line={"color": color},
                ),
                row=j // cols + 1,
                col=j % cols + 1,
            )
    curves.update_yaxes(range=[0, 1.05])
    curves.update_xaxes(dtick=1, title_text="k")
    curves.update_layout(title="pass@k (unbiased estimator)", height=320 * rows)
    return [bars, curves]


_SORT_JS = """
document.querySelectorAll('table.leaderboard th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var asc = th.dataset.order !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? 'asc' : 'desc';
    var key = function (row) {
      var text = row.cells[col].textContent.trim();
      var num = parseFloat(text);
      return isNaN(num) ? text : num;
    };
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      var cmp = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? cmp : -cmp;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.leaderboard { border-collapse: collapse; margin: 1em 0; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.leaderboard td:nth-child(2), table.leaderboard th:nth-child(2) { text-align: left; }
table.leaderboard th { background: #f0f0f5; cursor: pointer; user-select: none; }
table.leaderboard th[data-order=asc]::after { content: " ▲"; }
table.leaderboard th[data-order=desc]::after { content: " ▼"; }
.note { color: #a33; }
"""


def to_html(board: dict[str, Any]) -> str:
    """A self-contained HTML page: the sortable table and the plotly figures, plotly.js inlined once."""
    header = "".join(f"<th>{html.escape(c)}</th>" for c in _columns(board))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _row(board, run)) + "</tr>"
        for run in board["runs"]
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in board["notes"])
    figures = _figures(board)
    plots = "".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, fig in enumerate(figures)
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>gym_nemo leaderboard</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>gym_nemo leaderboard</h1>"
        "<p>Cells: pass@1 with its 95% bootstrap confidence interval (tasks resampled). Episodes with "
        "infrastructure errors are left out of every score; their share is in its own column. Click a header "
        "to sort.</p>"
        f"{notes}<table class='leaderboard'><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
        f"{plots}<script>{_SORT_JS}</script></body></html>\n"
    )


def write_leaderboard(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.html`` to ``out_dir``."""
    board = build_leaderboard(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json", "html": out / "leaderboard.html"}
    paths["markdown"].write_text(to_markdown(board), encoding="utf-8")
    paths["json"].write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["html"].write_text(to_html(board), encoding="utf-8")
    return paths
