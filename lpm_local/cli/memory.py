"""`lpm memory ...`: see, refit and control the memory from the terminal.

Commands that only read or move pointers (status, history, rollback, on, off) never load a model;
refit and show (and `lpm forget`, in ``forget.py``) load the backbone the memory was fitted for (or
``--model``). Torch is imported inside the commands so `lpm --help` stays fast.
"""

from __future__ import annotations

import math
import threading

import click

from lpm_local.cli.base import (
    LpmGroup,
    echo_json,
    finish_progress_line,
    json_option,
    open_profile,
    profile_option,
    stderr_progress,
)
from lpm_local.errors import BadInput

model_option = click.option(
    "--model",
    "model",
    metavar="NAME|PATH",
    default=None,
    help="Backbone to use (default: the one the memory was fitted for, else the default).",
)
quantize_option = click.option(
    "--quantize",
    type=click.Choice(["nf4", "none"]),
    default=None,
    help="Override the backbone's default quantization.",
)


@click.group(cls=LpmGroup)
def memory() -> None:
    """See and control what the assistant remembers about you.

    The memory is a few learned vectors per profile, refit from your chats in the background.
    `status` and `history` show it, `refit` runs a refit now, `rollback` returns to an earlier
    version, `off`/`on` switch it, `show` explains its slots; `lpm forget` drops a chat from it.
    """


def _when(stamp: str | None) -> str:
    return stamp[:19].replace("T", " ") if stamp else "never"


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@memory.command()
@profile_option
@json_option
def status(profile_name: str | None, as_json: bool) -> None:
    """Show whether memory is on, its current version, the last refit and what is pending."""
    from lpm_local.memory import requests
    from lpm_local.memory.refit_log import parse_detail
    from lpm_local.memory.scheduler import refit_running_elsewhere
    from lpm_local.settings import load_settings

    refit_every = load_settings().refit_every

    store, profile = open_profile(profile_name)
    with store:
        versions = store.list_memory_versions(profile.id)
        current = next((v for v in versions if v.id == profile.current_version_id), None)
        refits = store.list_refits(profile.id)
        last = next((r for r in refits if r.status != "running"), None)
        through = next(
            (
                parse_detail(r.detail).get("through")
                for r in refits
                if r.status in ("committed", "no_improvement")
            ),
            None,
        )
        if through is None and current is not None:
            through = current.trained_through_message_id
        turns = store.count_user_messages(profile.id, after_message_id=through)
        request = requests.pending_refit(store, profile.id)
        holder = refit_running_elsewhere(profile.id)
        learned = _learned(store, current)
    if as_json:
        echo_json(
            {
                "profile": profile.name,
                "memory_enabled": bool(profile.memory_enabled),
                "version": _version_json(current),
                "last_refit": None
                if last is None
                else {
                    "status": last.status,
                    "finished_at": last.finished_at,
                    "new_version_id": last.new_version_id,
                    "detail": parse_detail(last.detail),
                },
                "user_turns_since_refit": turns,
                "refit_every": refit_every,
                "requested": request or None,
                "running_pid": holder,
                "versions_kept": len(versions),
                "learned": learned,
            }
        )
        return
    rows = [
        ("profile", profile.name),
        (
            "memory",
            "on"
            if profile.memory_enabled
            else "off (replies are not shaped by memory; nothing is learned)",
        ),
        (
            "version",
            f"#{current.id} from {_when(current.created_at)}, held-out loss "
            f"{_loss(current.heldout_loss)}, {current.n_bytes:,} bytes"
            if current
            else "none yet (no refit has committed)",
        ),
        ("learned", _learned_text(learned)),
        *_bank_rows(learned),
        ("last refit", _last_refit(last)),
        (
            "since then",
            f"{turns} new user turns (a refit runs every {refit_every} in the app)",
        ),
        ("requested", f"{request.get('reason')} ({_when(request.get('at'))})" if request else "no"),
        ("running", "no" if holder is None else f"yes (process {holder})"),
        ("versions", f"{len(versions)} kept"),
    ]
    for label, value in rows:
        click.echo(f"{label:<11} {value}")


def _last_refit(record) -> str:
    from lpm_local.memory.refit_log import parse_detail

    if record is None:
        return "never"
    info = parse_detail(record.detail)
    text = f"{_when(record.finished_at)} {record.status}"
    if info.get("heldout_before") is not None and info.get("heldout_after") is not None:
        text += f", held-out loss {info['heldout_before']:.4f} -> {info['heldout_after']:.4f}"
    if record.new_version_id:
        text += f", wrote #{record.new_version_id}"
    elif info.get("note"):
        text += f" ({info['note']})"
    return text


@memory.command()
@profile_option
@model_option
@quantize_option
@click.option(
    "--steps",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Optimiser steps at most (default: one pass over the history, 40-120 steps; early "
    "stopping may end sooner).",
)
def refit(
    profile_name: str | None, model: str | None, quantize: str | None, steps: int | None
) -> None:
    """Refit the memory now, in the foreground, and say whether a new version was written."""
    store, profile = open_profile(profile_name)
    with store:
        frozen = load_frozen(store, profile, model, quantize)
        outcome = foreground_refit(store, frozen, profile.id, "on demand (cli)", steps)
    click.echo(outcome.summary())


def load_frozen(store, profile, model: str | None, quantize: str | None):
    """The frozen memory for ``model``, by default the backbone the current version was fitted
    for (a memory is only readable by its own backbone)."""
    from lpm_local.backbones.loader import load_backbone
    from lpm_local.memory.frozen import load_frozen_memory

    if model is None and profile.current_version_id is not None:
        model = store.get_memory_version(profile.current_version_id, with_tensors=False).backbone
    backbone = load_backbone(model, quantize=quantize, progress=stderr_progress("model: "))
    finish_progress_line()
    return load_frozen_memory(backbone)


def foreground_refit(store, frozen, profile_id: int, reason: str, steps: int | None = None):
    """A refit in a worker thread, so Ctrl-C cancels it cleanly (memory unchanged). A refit
    that finishes serves the pending refit request (an import's, a forget's), as the app's
    background refit does, so `lpm memory status` no longer shows it as requested."""
    from dataclasses import replace

    from lpm_local.memory import requests
    from lpm_local.memory.refit import RefitSettings, run_refit
    from lpm_local.memory.scheduler import locked_refit

    settings = RefitSettings() if steps is None else replace(RefitSettings(), steps=steps)
    cancel, box = threading.Event(), {}
    report = stderr_progress("refit: ")
    request = requests.pending_refit(store, profile_id)

    def work() -> None:
        try:
            box["outcome"] = locked_refit(
                store,
                profile_id,
                lambda: run_refit(
                    store,
                    frozen,
                    profile_id,
                    settings=settings,
                    reason=reason,
                    cancel=cancel,
                    progress=report,
                ),
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="lpm-refit-cli")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        click.echo("\ncancelling the refit (the memory stays as it was)...", err=True)
        worker.join()
    finish_progress_line()
    if "error" in box:
        raise box["error"]
    outcome = box["outcome"]
    if request is not None and outcome.status in ("committed", "no_improvement"):
        requests.clear_served_request(store, profile_id, request)
    return outcome


def _learned(store, current) -> dict | None:
    """What the current version holds and how much of it the refits learned: every number of a
    flat memory; a routed bank's low-rank change (the rest of the bank is the readings and words
    of the user's messages). Read from the blob's header: a no-model command imports no torch,
    and the tensors are checked where they are used."""
    from lpm_local.errors import BadBundle, CorruptDatabase
    from lpm_local.memory.config import MemoryConfig
    from lpm_local.memory.safetensors_header import read_header, shapes_in, zero_rows

    if current is None:
        return None
    where = f"memory version #{current.id}"
    try:
        blob = store.get_memory_version(current.id).tensors or b""
        entries, metadata = read_header(blob, where=where)
        shapes = shapes_in(entries, where=where)
        if "slots" not in shapes:
            return {"problem": "the version holds no slots"}
        config = MemoryConfig.from_json(metadata.get("memory_config", ""))
        groups = None
        if config.routed:  # an empty group's key row is all zero (``routing.extend_bank``)
            keys = range(0, config.n_slots, config.group_tokens + 1)
            groups = [not empty for empty in zero_rows(blob, "slots", keys, where=where)]
    except (BadBundle, CorruptDatabase) as exc:
        return {"problem": str(exc)}
    except (ValueError, TypeError) as exc:
        return {"problem": f"bad memory config: {exc}"}
    stored = math.prod(shapes["slots"])
    bank = {} if groups is None else {"groups": len(groups), "filed_groups": sum(groups)}
    if "change_a" not in shapes or "change_b" not in shapes:
        return {"stored_numbers": stored, "learned_numbers": stored, "change_rank": None, **bank}
    learned = math.prod(shapes["change_a"]) + math.prod(shapes["change_b"])
    rank = shapes["change_a"][-1] if shapes["change_a"] else 0
    return {"stored_numbers": stored, "learned_numbers": learned, "change_rank": rank, **bank}


def _learned_text(learned: dict | None) -> str:
    if learned is None:
        return "-"
    if "problem" in learned:
        return f"unreadable ({learned['problem']})"
    if learned["change_rank"] is None:
        return f"{learned['learned_numbers']:,} numbers (every number of the memory)"
    # The rest of the bank is what the model read in the user's messages (keys and words).
    return (
        f"{learned['learned_numbers']:,} numbers (a rank-{learned['change_rank']} change of the "
        f"bank's {learned['stored_numbers']:,})"
    )


def _bank_rows(learned: dict | None) -> list[tuple[str, str]]:
    if not learned or "groups" not in learned:
        return []  # no memory yet, or a flat one
    filed, groups = learned["filed_groups"], learned["groups"]
    note = "one per message that told something"
    if filed == groups:
        note += "; full: a new message takes the place of the older of its two most alike"
    return [("bank", f"{filed} of {groups} groups filed ({note})")]


def _version_json(v) -> dict | None:
    if v is None:
        return None
    return {
        "id": v.id,
        "created_at": v.created_at,
        "train_loss": v.train_loss,
        "heldout_loss": v.heldout_loss,
        "n_bytes": v.n_bytes,
        "parent_id": v.parent_id,
        "reason": v.reason,
        "backbone": v.backbone,
        "trained_through_message_id": v.trained_through_message_id,
    }


@memory.command()
@profile_option
@json_option
def history(profile_name: str | None, as_json: bool) -> None:
    """List the memory versions with their losses; * marks the current one."""
    store, profile = open_profile(profile_name)
    with store:
        versions = store.list_memory_versions(profile.id)
    if as_json:
        echo_json(
            [{**_version_json(v), "current": v.id == profile.current_version_id} for v in versions]
        )
        return
    if not versions:
        click.echo("no memory versions yet")
        return
    click.echo(
        f"  {'id':>5}  {'created':<19}  {'train':>7}  {'held-out':>8}  {'bytes':>7}  "
        f"{'parent':>6}  reason"
    )
    for v in versions:
        mark = "*" if v.id == profile.current_version_id else " "
        parent = f"#{v.parent_id}" if v.parent_id else "-"
        click.echo(
            f"{mark} {'#' + str(v.id):>5}  {_when(v.created_at):<19}  {_loss(v.train_loss):>7}  "
            f"{_loss(v.heldout_loss):>8}  {v.n_bytes:>7,}  {parent:>6}  {v.reason or ''}"
        )


def _version_id(text: str) -> int:
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise BadInput(
            f"not a version id: {text[:40]!r}", hint="use a number from `lpm memory history`"
        )
    return int(value)


@memory.command()
@click.argument("version")
@profile_option
def rollback(version: str, profile_name: str | None) -> None:
    """Make an earlier memory VERSION current (ids from `lpm memory history`)."""
    from lpm_local.memory.versions import rollback as do_rollback

    store, profile = open_profile(profile_name)
    with store:
        previous, new = do_rollback(store, profile.id, _version_id(version))
    click.echo(
        f"memory version #{new} is current (was #{previous})"
        if previous
        else f"memory version #{new} is current"
    )


@memory.command()
@profile_option
def on(profile_name: str | None) -> None:
    """Switch memory on: replies are shaped by it and it learns from new chats."""
    _switch(profile_name, True)


@memory.command()
@profile_option
def off(profile_name: str | None) -> None:
    """Switch memory off: replies come from the bare model and nothing is learned."""
    _switch(profile_name, False)


def _switch(profile_name: str | None, enabled: bool) -> None:
    store, profile = open_profile(profile_name)
    with store, store.transaction():
        store.set_memory_enabled(profile.id, enabled)
        store.audit(profile.id, "memory.on" if enabled else "memory.off")
    click.echo(f"memory is {'on' if enabled else 'off'} for profile {profile.name!r}")


@memory.command()
@click.option(
    "--reply",
    "reply_id",
    type=int,
    metavar="MESSAGE_ID",
    default=None,
    help="Also show which slots this reply attended to, as a heatmap.",
)
@profile_option
@model_option
@quantize_option
def show(
    reply_id: int | None, profile_name: str | None, model: str | None, quantize: str | None
) -> None:
    """Explain each memory slot: a label, how much replies use it, what shaped it."""
    from lpm_local.memory.frozen import current_slots
    from lpm_local.memory.inspection import (
        by_group_attention,
        describe,
        heatmap,
        reply_attention,
    )

    store, profile = open_profile(profile_name)
    with store:
        attention = None
        if reply_id is not None:
            attention, used_version = reply_attention(store, reply_id, profile_id=profile.id)
        frozen = load_frozen(store, profile, model, quantize)
        loaded = current_slots(store, frozen, profile.id)
        if loaded.problem:
            click.echo(f"the current version cannot be used: {loaded.problem}")
        slots = describe(store, frozen, profile.id, loaded.slots, loaded.version_id, attention)
    if not slots:
        click.echo("no memory yet: it is fitted after a few chats (or run `lpm memory refit`)")
    for s in slots:
        reply = f"  this reply {s.reply_usage:5.1%}" if s.reply_usage is not None else ""
        click.echo(f"{s.kind} {s.index}: {s.label or '?'}")
        click.echo(f"  usage {s.usage:5.1%} over {len(s.usage_history)} recent replies{reply}")
        click.echo(f"  shaped by: {', '.join(s.sources) if s.sources else '-'}")
    if attention is not None:
        click.echo(f"\nreply #{reply_id} (memory version #{used_version}):")
        grouped = by_group_attention(attention, slots)  # a bank: one column per group
        click.echo(heatmap(attention) if grouped is None else heatmap(grouped, "group"))


COMMANDS = [memory]
