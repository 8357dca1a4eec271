"""The evaluation figure (matplotlib, Agg backend: no display needed).

Panels: accuracy per method and question type; accuracy against history length; KV-cache bytes
per turn against history length (log scale: full context grows with the history, soft-prompt
methods stay flat); and, with LoCoMo, its four-option accuracy per method.
"""

from __future__ import annotations

from pathlib import Path

from lpm_local.research.eval.cases import SHORT


def plot_report(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = result["benchmarks"]
    main = "personamem" if "personamem" in benches else next(iter(benches), None)
    extra = [b for b in benches if b != main]
    panels = 3 + len(extra)
    rows = (panels + 1) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(13, 4.6 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.axis("off")
    if main is not None:
        _per_type(axes[0], benches[main], main)
        _per_length(axes[1], benches[main], "accuracy", f"{main}: accuracy vs history length")
        _per_length(
            axes[2], benches[main], "kv_bytes", f"{main}: KV-cache bytes per turn", log=True
        )
    for ax, bench in zip(axes[3:], extra):
        _overall(ax, benches[bench], bench)
    fig.suptitle(f"lpm eval: {result['meta']['backbone']} ({result['meta']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_type(ax, info: dict, name: str) -> None:
    methods = list(info["methods"])
    types = info["qtypes"]
    width = 0.8 / max(len(methods), 1)
    for k, m in enumerate(methods):
        values = [info["methods"][m]["per_type"].get(t) or 0.0 for t in types]
        values.append(info["methods"][m]["accuracy"])
        ax.bar([i + k * width for i in range(len(types) + 1)], values, width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(types) + 1)])
    ax.set_xticklabels([SHORT.get(t, t) for t in types] + ["overall"], rotation=35, ha="right")
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: accuracy per question type")
    ax.legend(fontsize=7, ncol=2)


def _per_length(ax, info: dict, key: str, title: str, log: bool = False) -> None:
    for m, summary in info["methods"].items():
        points = [
            (p["history_tokens"], p[key])
            for p in summary["per_length"].values()
            if p[key] is not None
        ]
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("history tokens")
    if log:
        ax.set_yscale("log")
        ax.set_ylabel("bytes")
    else:
        ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _overall(ax, info: dict, name: str) -> None:
    methods = list(info["methods"])
    acc = [info["methods"][m]["accuracy"] for m in methods]
    lo = [a - info["methods"][m]["accuracy_ci95"][0] for a, m in zip(acc, methods)]
    hi = [info["methods"][m]["accuracy_ci95"][1] - a for a, m in zip(acc, methods)]
    ax.bar(range(len(methods)), acc, yerr=[lo, hi], capsize=3, color="tab:blue")
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=35, ha="right")
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{name}: four-option accuracy")
