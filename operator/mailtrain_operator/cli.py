"""mailtrain-operator: the command the operator image runs.

    mailtrain-operator            run the operator until SIGTERM
    mailtrain-operator --help     this text, and every setting with its default
    mailtrain-operator delete-pools --namespace NS --selector SELECTOR
                                  the chart's pre-delete hook (mailtrain_operator.release_pools)

Settings come from environment variables only (listed below), so a Deployment sets them with
`env`. Exit codes: 0 stopped by a signal, 2 a bad setting (one line on stderr names the variable).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from mailtrain_operator.settings import OperatorSettings, SettingsError, load_settings, variable

EXIT_BAD_SETTINGS = 2
EXIT_OPERATOR_FAILED = 1


def _settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, field in OperatorSettings.model_fields.items():
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        lines.append(f"  {variable(name)}  (default: {shown!r})")
        lines += textwrap.wrap(
            field.description or "", width=96, initial_indent="      ", subsequent_indent="      "
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["delete-pools"]:
        from mailtrain_operator import release_pools

        sys.exit(release_pools.main(args[1:]))
    parser = argparse.ArgumentParser(
        prog="mailtrain-operator",
        description=__doc__,
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(args)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"mailtrain-operator: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    # Imported only now: the settings check above needs no kopf, and so stays fast.
    from mailtrain_operator import framework

    framework.configure_logging(settings)
    try:
        framework.run(settings)
    except framework.OperatorFailed as exc:
        print(f"mailtrain-operator: stopped: {exc}", file=sys.stderr)
        sys.exit(EXIT_OPERATOR_FAILED)
