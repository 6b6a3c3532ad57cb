"""The ``teacherkit`` command line.

Core commands live next to what they drive (``teacherkit/data/commands.py``,
``teacherkit/training/commands.py``, ...); each module has ``register(app)``. Plugins add
commands through the ``teacherkit_register_commands`` hook. Nothing here imports torch:
``teacherkit --help`` and ``teacherkit plugins`` stay under a second.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from teacherkit import __version__
from teacherkit.errors import EXIT_BUG, EXIT_INTERRUPTED, TeacherkitError, describe_os_error, exit_code_for

#: Core command modules, each exposing ``register(app: typer.Typer)``. A module that
#: is not there yet (a partial install) is skipped.
CORE_COMMAND_MODULES = (
    "teacherkit.data.commands",
    "teacherkit.training.commands",
    "teacherkit.evaluation.commands",
    "teacherkit.inference.commands",
    "teacherkit.reporting.commands",
)


class State:
    verbose = False


state = State()


def get_host() -> Any:
    """The plugin host of this CLI invocation (:func:`teacherkit.plugins.current_host`)."""
    from teacherkit.plugins import current_host

    return current_host()


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"teacherkit {__version__}")
        raise typer.Exit()


def _main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs and full tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    allow_outside_images: Annotated[
        bool, typer.Option("--allow-outside-images",
                           help="Let image file_names leave the image folder (absolute paths, '..'); refused "
                                "otherwise. Same as TEACHERKIT_ALLOW_OUTSIDE_IMAGES=1.")
    ] = False,
) -> None:
    """Fine-tune Grounding DINO (boxes) and SAM (masks) teachers on your COCO data with LoRA,
    chosen from what the data contains; evaluate them and pseudo-label images for a student."""
    state.verbose = verbose
    _configure_logging(verbose)
    if allow_outside_images:
        from teacherkit.data.image_files import ALLOW_OUTSIDE_IMAGES_ENV

        # the environment reaches every reader of images, DataLoader workers included
        os.environ[ALLOW_OUTSIDE_IMAGES_ENV] = "1"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "warning: %(message)s",
        force=True,
    )
    # third-party debug chatter is not ours to show
    for noisy in ("stevedore", "matplotlib", "PIL", "urllib3", "filelock", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List installed plugins, the hooks each implements, the teachers they provide, and
    plugins that failed to load."""
    from teacherkit.plugins import PluginHookError

    host = get_host()
    teachers: dict[str, list[dict[str, str]]] = {}
    # each plugin's declarations on their own: one plugin raising must not hide the listing
    for name, declared in host.teachers_by_plugin(isolate=True):
        if isinstance(declared, PluginHookError):
            host.record_failure(name, declared.cause, hook="teacherkit_register_teachers")
            continue
        teachers[name] = [{"name": s.name, "learns_from": s.learns_from} for s in declared]
    plugins = []
    for info in host.infos:
        entry = info.to_dict()
        entry["teachers"] = teachers.get(info.name, [])
        plugins.append(entry)
    failures = [f.to_dict() for f in host.failures]
    if as_json:
        typer.echo(json.dumps({"plugins": plugins, "failed": failures, "disabled": sorted(host.disabled)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="teacherkit plugins")
    table.add_column("plugin")
    table.add_column("distribution")
    table.add_column("teachers")
    table.add_column("hooks")
    for entry in plugins:
        dist = f"{entry['distribution'] or '-'} {entry['version'] or ''}".strip()
        names = ", ".join(f"{t['name']} ({t['learns_from']})" for t in entry["teachers"]) or "-"
        table.add_row(entry["name"], dist, names, "\n".join(entry["hooks"]))
    console.print(table)
    for failure in host.failures:
        console.print(f"[red]failed[/red] {failure.name} ({failure.entry_point}): {failure.error}", highlight=False)
        if state.verbose:
            console.print(failure.traceback, highlight=False, markup=False)
    if host.disabled:
        console.print(f"disabled by TEACHERKIT_DISABLE_PLUGINS: {', '.join(sorted(host.disabled))}")


def config_command(
    preset: Annotated[str | None, typer.Option("--preset", help="Apply a preset: tiny or base.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="A YAML config file layered over the defaults.")
    ] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Override a key: --set training.lr=3e-4.")] = None,
    describe: Annotated[bool, typer.Option("--describe", help="List every key with its default and help.")] = False,
) -> None:
    """Print the resolved configuration (defaults of the installed teachers, the preset, the
    file and --set overrides) as YAML, or describe every key."""
    from teacherkit.config import describe_fields, resolve_config

    model = get_host().config_model()
    if describe:
        for key, type_name, default, help_text in describe_fields(model):
            typer.echo(f"{key} ({type_name}, default {default!r}): {help_text}")
        return
    config = resolve_config(model, preset=preset, config_file=config_file, sets=sets or [])
    typer.echo(config.to_yaml(), nl=False)


def build_app(host: Any | None = None) -> typer.Typer:
    """Build the CLI: core commands, then every plugin's commands."""
    if host is not None:
        from teacherkit.plugins import set_current_host

        set_current_host(host)
    app = typer.Typer(
        name="teacherkit",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        callback=_main_callback,
    )
    app.command("plugins")(plugins_command)
    app.command("config")(config_command)
    for module_name in CORE_COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)
    get_host().register_commands(app)
    return app


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _quiet_transformers() -> Callable[[], None]:
    """Silence transformers' logs and the Hugging Face progress bars for one invocation;
    returns the undo (``run`` is also called in-process, where the caller's settings must
    survive it). Only what is already imported is touched: what is imported later reads
    the environment variables ``run`` sets."""
    undo: list[Callable[[], None]] = []
    if "huggingface_hub" in sys.modules:  # transformers copies its bar switch when imported
        from huggingface_hub import utils as hub_utils

        if not hub_utils.are_progress_bars_disabled():
            hub_utils.disable_progress_bars()
            undo.append(hub_utils.enable_progress_bars)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        undo.append(lambda: hf_logging.set_verbosity(verbosity))
        if bars:
            undo.append(hf_logging.enable_progress_bar)

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (traceback with ``--verbose``) and exit
    with :func:`teacherkit.errors.exit_code_for`."""
    args = list(sys.argv[1:] if argv is None else argv)
    state.verbose = "--verbose" in args or "-v" in args
    _configure_logging(state.verbose)
    # our own progress display is enough; library download/loading bars only add noise
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # already imported (the Python API, tests): the variables above come too late for it
    restore_transformers = _quiet_transformers()
    import warnings

    # transformers 5 deprecation chatter from inside peft/transformers, not actionable by users
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    saved_env = dict(os.environ)
    try:
        return _dispatch(args)
    finally:
        restore_transformers()
        # --allow-outside-images lasts for this invocation only (run() is also called in-process)
        for key in set(os.environ) - set(saved_env):
            if key.startswith("TEACHERKIT_"):
                del os.environ[key]


def _dispatch(args: list[str]) -> int:
    try:
        app = build_app()
        # with standalone_mode=False click returns a command's exit code instead of raising
        rc = app(args=args, prog_name="teacherkit", standalone_mode=False)
        if isinstance(rc, int):
            return rc
    except (TeacherkitError, OSError) as exc:
        if state.verbose:
            import traceback

            traceback.print_exc()
        message = str(exc) if isinstance(exc, TeacherkitError) else describe_os_error(exc)
        typer.echo(f"error: {message if state.verbose else one_line(message)}", err=True)
        return exit_code_for(exc)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # click usage errors and bugs
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):  # click/typer usage errors
            _show_usage_error(exc)
            return exc.exit_code
        if state.verbose:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", err=True)
        return EXIT_BUG
    return 0


def one_line(message: str) -> str:
    """A message on one line (what scripts and log greps expect): a line ending in ":"
    runs on into the next, other lines are separated by "; "."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    out = lines[0]
    for previous, line in zip(lines, lines[1:], strict=False):
        out += (" " if previous.endswith(":") else "; ") + line
    return out


def _show_usage_error(exc: Any) -> None:
    """A bad flag in one line, ``error: <what> (see 'teacherkit <cmd> --help')``; a bare
    command (no arguments) still shows its help."""
    if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
        exc.show()
        return
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    message = " ".join(str(exc.format_message()).split())
    typer.echo(f"error: {message}{where}", err=True)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    main()
