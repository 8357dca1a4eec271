"""From per-question records to the evidence: summary numbers, Markdown, JSON and a PNG plot.

Per benchmark and method: accuracy (with a Wilson 95% interval: at a few hundred questions a
difference of a few points is noise, and the table should say so), macro accuracy over question
types, accuracy per type and per history length, KV-cache bytes per turn, trainable numbers per
user, fit time and time to first token; for LoCoMo also token F1 when answers were generated.

Two accuracies where replies were generated: the **log-likelihood** accuracy (the option the
model finds likeliest is the right one) and the **generative** accuracy (the reply to the
question asked free-form names the right option and no wrong one, ``mentions.py``), each overall,
per question type and per history length, each with its Wilson 95% interval.

KV-cache bytes of a turn = 2 (K and V) x layers x KV heads x head dim x bytes per value x tokens
in context when the answer starts (soft tokens included).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from lpm_local.research.eval.cases import SHORT


def kv_bytes_for(config, dtype) -> int:
    """Bytes of K and V per token for a (text) model config at ``dtype``."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    itemsize = dtype.itemsize if hasattr(dtype, "itemsize") else int(dtype)
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize


def kv_bytes_per_token(backbone) -> int:
    """KV bytes per token of a loaded backbone (its cache holds values in the compute dtype)."""
    return kv_bytes_for(backbone.model.config, backbone.dtype)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = hits / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(records: list[dict], fits: list[dict], meta: dict) -> dict:
    """The report dict: ``meta``, ``benchmarks`` (summaries), ``ratios``, ``records``, ``fits``."""
    per_token = meta["kv_bytes_per_token"]
    for r in records:
        r["kv_bytes"] = r["kv_tokens"] * per_token
    out = {}
    for bench, info in meta["benchmarks"].items():
        methods = {}
        for m in [d["name"] for d in meta["methods"]]:
            rows = [r for r in records if r["benchmark"] == bench and r["method"] == m]
            mfits = [f for f in fits if f["benchmark"] == bench and f["method"] == m]
            if rows:
                methods[m] = _method_summary(rows, mfits, info["qtypes"])
        out[bench] = {"qtypes": info["qtypes"], "methods": methods}
    return {
        "meta": meta,
        "benchmarks": out,
        "ratios": _ratios(out),
        "records": records,
        "fits": fits,
    }


def merge_results(results: list[dict]) -> dict:
    """One report from runs of the same backbone and methods over different benchmarks (e.g. run
    side by side, one process each); refuses runs that are not comparable."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]["meta"]
    keys = ("backbone", "device", "dtype", "quantization", "settings")
    for other in results[1:]:
        for key in keys:
            if other["meta"][key] != first[key]:
                raise ValueError(f"runs differ in {key}: {first[key]!r} vs {other['meta'][key]!r}")
    meta = {
        **first,
        "benchmarks": {},
        "runs": [r["meta"]["started"] for r in results],
        "seconds": max(r["meta"]["seconds"] for r in results),
        "cancelled": any(r["meta"].get("cancelled") for r in results),
    }
    for r in results:
        meta["benchmarks"].update(r["meta"]["benchmarks"])
        meta["lr_tuning"] = meta.get("lr_tuning") or r["meta"].get("lr_tuning")
    records = [dict(row) for r in results for row in r["records"]]
    fits = [dict(row) for r in results for row in r["fits"]]
    return summarise(records, fits, meta)


def _ci(flags: list[bool]) -> tuple[float, float] | None:
    return wilson(sum(flags), len(flags)) if flags else None


def _method_summary(rows: list[dict], fits: list[dict], qtypes: list[str]) -> dict:
    hits = sum(r["hit"] for r in rows)
    by_type = {t: [r for r in rows if r["qtype"] == t] for t in qtypes}
    per_type = {t: _mean([r["hit"] for r in rs]) for t, rs in by_type.items()}
    generated = any("gen_hit" in r for r in rows)
    lengths = defaultdict(list)
    for r in rows:
        lengths[r["length"]].append(r)
    per_length = {}
    for label, rs in sorted(lengths.items(), key=lambda kv: float(kv[0]) if _isnum(kv[0]) else 0.0):
        per_length[label] = {
            "questions": len(rs),
            "accuracy": _mean([r["hit"] for r in rs]),
            "accuracy_ci95": _ci([r["hit"] for r in rs]),
            "history_tokens": _mean([r["history_tokens"] for r in rs]),
            "kv_tokens": _mean([r["kv_tokens"] for r in rs]),
            "kv_bytes": _mean([r["kv_bytes"] for r in rs]),
        }
        if generated:
            flags = _gen_flags(rs)
            per_length[label]["gen_accuracy"] = _mean(flags)
            per_length[label]["gen_accuracy_ci95"] = _ci(flags)
    summary = {
        "questions": len(rows),
        "accuracy": hits / len(rows),
        "accuracy_ci95": wilson(hits, len(rows)),
        "macro_accuracy": _mean(per_type.values()),
        "per_type": per_type,
        "per_type_ci95": {t: _ci([r["hit"] for r in rs]) for t, rs in by_type.items()},
        "per_length": per_length,
        "margin": _mean([r["margin"] for r in rows]),
        "kv_tokens": _mean([r["kv_tokens"] for r in rows]),
        "kv_bytes": _mean([r["kv_bytes"] for r in rows]),
        "trainable_params": max((f["trainable"] for f in fits), default=0),
        "fit_seconds": _mean([f["fit_seconds"] for f in fits]),
        "ttft_seconds": _mean([t for f in fits for t in f["ttft"]]),
        "fits": len(fits),
    }
    if generated:
        flags = _gen_flags(rows)
        gen_type = {t: _gen_flags(rs) for t, rs in by_type.items()}
        summary.update(
            gen_questions=len(flags),
            gen_accuracy=_mean(flags),
            gen_accuracy_ci95=_ci(flags),
            gen_macro_accuracy=_mean([_mean(f) for f in gen_type.values()]),
            gen_per_type={t: _mean(f) for t, f in gen_type.items()},
            gen_per_type_ci95={t: _ci(f) for t, f in gen_type.items()},
        )
    if any("f1" in r for r in rows):
        summary["f1"] = _mean([r.get("f1") for r in rows])
        summary["f1_per_type"] = {
            t: _mean([r.get("f1") for r in rows if r["qtype"] == t]) for t in qtypes
        }
    return summary


def _gen_flags(rows: list[dict]) -> list[bool]:
    return [bool(r["gen_hit"]) for r in rows if "gen_hit" in r]


def _isnum(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _ratios(benchmarks: dict) -> dict:
    """The paper's two headline ratios, where the runs allow them."""
    out = {}
    for bench, info in benchmarks.items():
        methods = info["methods"]
        lpm, full, lora = methods.get("lpm"), methods.get("full_context"), methods.get("lora")
        if lpm and full:
            longest = list(full["per_length"])[-1]
            if longest in lpm["per_length"]:
                where = f"{longest}_tokens" if _isnum(longest) else longest
                out[f"{bench}_kv_full_context_over_lpm_at_{where}"] = (
                    full["per_length"][longest]["kv_bytes"] / lpm["per_length"][longest]["kv_bytes"]
                )
        if lpm and lora and lpm["trainable_params"]:
            out[f"{bench}_trainable_lora_over_lpm"] = (
                lora["trainable_params"] / lpm["trainable_params"]
            )
    return out


# -- outputs ---------------------------------------------------------------------------------


def write_all(result: dict, out_dir: Path) -> dict[str, Path]:
    """``eval.json``, ``eval.md`` and ``eval.png`` in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "eval.json",
        "markdown": out_dir / "eval.md",
        "plot": out_dir / "eval.png",
    }
    paths["json"].write_text(
        json.dumps(result, indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    paths["markdown"].write_text(to_markdown(result), encoding="utf-8")
    from lpm_local.research.eval.plot import plot_report

    plot_report(result, paths["plot"])
    return paths


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _load(meta: dict) -> str:
    load = meta.get("load_average_end")
    return "/".join(f"{x:.1f}" for x in load) if load else "unknown"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if x >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def to_markdown(result: dict) -> str:
    meta = result["meta"]
    labels = {d["name"]: d["label"] for d in meta["methods"]}
    s = meta["settings"]
    lines = [
        f"# lpm eval: {meta['backbone']}",
        "",
        f"- device {meta['device']} ({meta['dtype']}, {meta['quantization']}), window "
        f"{meta['context_window']:,} tokens, KV {meta['kv_bytes_per_token']:,} bytes/token, "
        f"{meta['torch_threads']} threads (load average {_load(meta)}); seed {meta['seed']}; "
        f"run {meta['started']}, {meta['seconds']:.0f} s"
        + (" (CANCELLED: partial)" if meta.get("cancelled") else ""),
        f"- fitted methods: {s['steps']} Adam steps, batch {s['batch_size']}, lr "
        + ", ".join(f"{k} {v:g}" for k, v in s["lrs"].items() if k in labels)
        + (
            " (chosen on validation users)"
            if meta.get("lr_tuning")
            else " (given or defaults; no lr search in this run)"
        ),
    ]
    for d in meta["methods"]:
        if d["name"] == "lpm":
            lines.append(f"- LPM projector: {d['projector']}; slots start from: {d['slot_init']}")
    lines.append(
        "- chance is 25% (four options); accuracy is micro (all questions), macro = mean over types"
    )
    if s.get("generate"):
        lines.append(
            f"- generative: the question asked free-form (its answer prefix, no options), a greedy"
            f" reply of at most {s.get('max_new_tokens', '?')} tokens; right when it names the"
            " right option and no wrong one (distinctive content words, "
            "`lpm_local/research/eval/mentions.py`)"
        )
    for bench, info in result["benchmarks"].items():
        lines += ["", f"## {bench}", "", _main_table(info, labels)]
        if any("gen_accuracy" in m for m in info["methods"].values()):
            lines += [
                "",
                "### per question type: log-likelihood / generative accuracy (95% CI)",
                "",
                _type_table(info, labels),
            ]
        lines += ["", "### by history length", "", _length_table(info, labels)]
    if result["ratios"]:
        lines += ["", "## ratios", ""] + [f"- {k}: {v:,.1f}x" for k, v in result["ratios"].items()]
    return "\n".join(lines) + "\n"


def _main_table(info: dict, labels: dict) -> str:
    types = info["qtypes"]
    f1 = any("f1" in m for m in info["methods"].values())
    gen = any("gen_accuracy" in m for m in info["methods"].values())
    head = (
        ["method", "n", "LL accuracy (95% CI)"]
        + (["generative (95% CI)"] if gen else [])
        + ["macro"]
        + [SHORT.get(t, t) for t in types]
        + (["F1"] if f1 else [])
        + ["KV/turn", "trainable/user", "fit s", "TTFT s"]
    )
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in info["methods"].items():
        lo, hi = m["accuracy_ci95"]
        cells = [
            labels.get(name, name),
            str(m["questions"]),
            f"{_pct(m['accuracy'])} ({_pct(lo)}-{_pct(hi)})",
        ]
        if gen:
            cells.append(_pct_ci(m.get("gen_accuracy"), m.get("gen_accuracy_ci95")))
        cells += [_pct(m["macro_accuracy"])] + [_pct(m["per_type"].get(t)) for t in types]
        if f1:
            cells.append(_num(m.get("f1"), "{:.3f}"))
        cells += [
            _bytes(m["kv_bytes"]),
            _num(m["trainable_params"]),
            _num(m["fit_seconds"], "{:.1f}"),
            _num(m["ttft_seconds"], "{:.2f}"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _pct_ci(x: float | None, ci) -> str:
    """ "40.0% (25.1-57.3%)", or "-" when nothing was measured."""
    if x is None:
        return "-"
    return f"{_pct(x)} ({_pct(ci[0])}-{_pct(ci[1])})" if ci else _pct(x)


def _type_table(info: dict, labels: dict) -> str:
    types = info["qtypes"]
    head = ["method"] + [SHORT.get(t, t) for t in types]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in info["methods"].items():
        cells = [labels.get(name, name)]
        for t in types:
            ll = _pct_ci(m["per_type"].get(t), m.get("per_type_ci95", {}).get(t))
            gen = _pct_ci(m.get("gen_per_type", {}).get(t), m.get("gen_per_type_ci95", {}).get(t))
            cells.append(f"{ll} / {gen}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _length_table(info: dict, labels: dict) -> str:
    lengths = list(dict.fromkeys(k for m in info["methods"].values() for k in m["per_length"]))
    gen = any("gen_accuracy" in m for m in info["methods"].values())
    what = "LL / generative (95% CI) / KV" if gen else "acc (95% CI) / KV"
    head = ["method"] + [f"{k} tok: {what}" if _isnum(k) else f"{k}: {what}" for k in lengths]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in info["methods"].items():
        cells = [labels.get(name, name)]
        for k in lengths:
            p = m["per_length"].get(k)
            if p is None:
                cells.append("-")
                continue
            parts = [_pct_ci(p["accuracy"], p.get("accuracy_ci95"))]
            if gen:
                parts.append(_pct_ci(p.get("gen_accuracy"), p.get("gen_accuracy_ci95")))
            parts.append(_bytes(p["kv_bytes"]))
            cells.append(" / ".join(parts) + f" (n={p['questions']})")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
