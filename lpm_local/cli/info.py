"""`lpm models`, `lpm doctor`, `lpm paths`: what is here and what would run."""

from __future__ import annotations

import importlib.metadata
import platform
import sqlite3

import click

from lpm_local import locations


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@click.command()
def paths() -> None:
    """Show where lpm keeps your data and its caches."""
    rows = [
        ("data dir", locations.data_dir()),
        ("database", locations.db_path()),
        ("settings", locations.settings_path()),
        ("cache dir", locations.cache_dir()),
        ("LPM_HOME", locations.home_override() or "(not set)"),
    ]
    for label, value in rows:
        click.echo(f"{label:<10} {value}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of the table.")
def models(as_json: bool) -> None:
    """List the backbones: which is selected, which are ready on this machine."""
    from lpm_local.backbones.loader import backbone_status, default_backbone_name
    from lpm_local.backbones.registry import memory_kind, registry

    default = default_backbone_name()
    if as_json:
        import json

        rows = [
            {
                "name": name,
                "default": name == default,
                "status": backbone_status(spec),
                "memory": memory_kind(name),
                "description": spec.description,
            }
            for name, spec in registry().items()
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'':2}{'name':<19} {'status':<36} {'memory':<29} description")
    for name, spec in registry().items():
        mark = "* " if name == default else "  "
        click.echo(
            f"{mark}{name:<19} {backbone_status(spec):<36} {memory_kind(name):<29} "
            f"{spec.description}"
        )
    click.echo(
        "\n* = used when no --model is given. `--model PATH` loads any local HF directory."
        "\nmemory: a trained projector reads the memory slots into soft tokens; without one"
        "\nthe memory is a routed bank: soft tokens filed per message, each turn reading the"
        "\ngroups nearest to it."
    )


@click.command()
def doctor() -> None:
    """Check this machine: device, versions, SQLite, paths, and what would be loaded."""
    import torch

    from lpm_local.backbones.loader import default_backbone_name
    from lpm_local.backbones.registry import get_spec, memory_kind, registry

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    default = get_spec(default_backbone_name())
    rows = [
        ("python", platform.python_version()),
        ("device", device),
        ("torch", torch.__version__),
        *[
            (pkg, _version(pkg))
            for pkg in (
                "transformers",
                "bitsandbytes",
                "peft",
                "accelerate",
                "textual",
                "sqlite-utils",
            )
        ],
        *[(spec.name, _packages_state(spec)) for spec in registry().values() if spec.packages],
        ("sqlite", sqlite3.sqlite_version),
        ("data dir", locations.data_dir()),
        ("database", _database_state()),
        ("would load", f"{default.name} ({default.default_quantization(cuda)})"),
        ("memory", f"{memory_kind(default.name)} on {default.name}"),
    ]
    for label, value in rows:
        click.echo(f"{label:<19} {value}")


def _packages_state(spec) -> str:
    """The installed version of an embedded backbone's package(s); the parts of a multi-part
    one share a version, so one line counts them instead of listing six."""
    versions = [_version(p) for p in spec.packages]
    if len(versions) == 1:
        return f"{spec.packages[0]} {versions[0]}"
    installed = [v for v in versions if v != "not installed"]
    found = ", ".join(sorted(set(installed))) or "not installed"
    return (
        f"{spec.packages[0]} ... {spec.packages[-1]} {found} "
        f"({len(installed)} of {len(versions)} parts installed)"
    )


def _database_state() -> str:
    from lpm_local.errors import LpmError
    from lpm_local.storage.store import Store

    path = locations.db_path()
    if not path.exists():
        return f"{path} (not created yet)"
    try:
        with Store.open() as store:
            profile = store.active_profile()
            return f"{path} (ok, active profile '{profile.name}')"
    except LpmError as error:
        return f"{path} (PROBLEM: {error})"


COMMANDS = [models, doctor, paths]
