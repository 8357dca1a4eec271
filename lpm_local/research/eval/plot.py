"""The evaluation figure (matplotlib, Agg backend: no display needed).

Panels: log-likelihood accuracy per method and question type (overall with its 95% interval);
the same for the generative accuracy when replies were generated; both accuracies against
history length (solid: log-likelihood, dashed: generative, with 95% intervals); KV-cache bytes
per turn against history length (log scale: full context grows with the history, soft-prompt
methods stay flat); and, for every other benchmark, its accuracies per method.
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
    gen = main is not None and any("gen_accuracy" in m for m in benches[main]["methods"].values())
    panels = (4 if gen else 3) + len(extra)
    rows = (panels + 1) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(13, 4.6 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.axis("off")
    used = 0
    if main is not None:
        _per_type(axes[0], benches[main], main, "")
        if gen:
            _per_type(axes[1], benches[main], main, "gen_")
        used = 1 + gen
        _per_length(axes[used], benches[main], "accuracy", f"{main}: accuracy vs history length")
        _per_length(
            axes[used + 1], benches[main], "kv_bytes", f"{main}: KV-cache bytes per turn", log=True
        )
        used += 2
    for ax, bench in zip(axes[used:], extra):
        _overall(ax, benches[bench], bench)
    fig.suptitle(f"lpm eval: {result['meta']['backbone']} ({result['meta']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_type(ax, info: dict, name: str, prefix: str) -> None:
    """Bars per type and overall; ``prefix`` "" (log-likelihood) or "gen_" (generative)."""
    methods = list(info["methods"])
    types = info["qtypes"]
    width = 0.8 / max(len(methods), 1)
    for k, m in enumerate(methods):
        summary = info["methods"][m]
        values = [summary.get(f"{prefix}per_type", {}).get(t) or 0.0 for t in types]
        overall = summary.get(f"{prefix}accuracy") or 0.0
        ci = summary.get(f"{prefix}accuracy_ci95") or (overall, overall)
        xs = [i + k * width for i in range(len(types) + 1)]
        ax.bar(xs, values + [overall], width, label=m)
        ax.errorbar(
            xs[-1], overall, yerr=[[overall - ci[0]], [ci[1] - overall]], color="k", capsize=2
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(types) + 1)])
    ax.set_xticklabels([SHORT.get(t, t) for t in types] + ["overall"], rotation=35, ha="right")
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    kind = "generative" if prefix else "log-likelihood"
    ax.set_ylabel(f"{kind} accuracy")
    ax.set_title(f"{name}: {kind} accuracy per question type (overall: 95% CI)")
    ax.legend(fontsize=7, ncol=2)


def _per_length(ax, info: dict, key: str, title: str, log: bool = False) -> None:
    keys = [(key, "-", "")]
    if key == "accuracy":
        keys.append(("gen_accuracy", "--", " (gen.)"))
    for k, (m, summary) in enumerate(info["methods"].items()):
        color = f"C{k % 10}"
        for field, style, suffix in keys:
            points = sorted(
                (p["history_tokens"], p[field], p.get(f"{field}_ci95"))
                for p in summary["per_length"].values()
                if p.get(field) is not None
            )
            if not points:
                continue
            xs, ys, cis = zip(*points)
            if all(cis):
                err = [[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]]
                ax.errorbar(
                    xs, ys, yerr=err, fmt="o" + style, color=color, capsize=2, label=m + suffix
                )
            else:
                ax.plot(xs, ys, "o" + style, color=color, label=m + suffix)
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
    gen = [info["methods"][m].get("gen_accuracy") for m in methods]
    width = 0.4 if any(g is not None for g in gen) else 0.8
    ax.bar(
        range(len(methods)),
        acc,
        width,
        yerr=[lo, hi],
        capsize=3,
        color="tab:blue",
        label="log-likelihood",
    )
    if width < 0.8:
        ci = [info["methods"][m].get("gen_accuracy_ci95") or (0.0, 0.0) for m in methods]
        g = [x or 0.0 for x in gen]
        ax.bar(
            [i + width for i in range(len(methods))],
            g,
            width,
            capsize=3,
            color="tab:orange",
            yerr=[[x - c[0] for x, c in zip(g, ci)], [c[1] - x for x, c in zip(g, ci)]],
            label="generative",
        )
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=35, ha="right")
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{name}: four-option accuracy (95% CI)")
