"""``python -m genre_ray.bench SUBCOMMAND [options]``: run one benchmark and write its report.

A subcommand whose module sets ``CONFIG_OVERRIDES = True`` takes ``--set KEY=VALUE`` (as the
search does); the parsed overrides are ``args.overrides``, for the module to apply over its own
before it loads its search space.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from genre_ray import cli
from genre_ray.bench import SUBCOMMANDS, load_average, wait_for_quiet

log = logging.getLogger("genre_ray.bench")


def _common_options() -> argparse.ArgumentParser:
    """Options that every subcommand takes, after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--wait-load", type=float, metavar="L", help="on a shared machine: first wait (up to "
                        "15 min) until the 1-minute load average is below L (default: start at once)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, one sub-parser per entry of :data:`genre_ray.bench.SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=cli.prog("bench"),
        description="Benchmarks of genre_ray. Each writes a Markdown report (machine, date, command, "
        "tables) and a CSV beside it under results/.",
        epilog=f"Run '{cli.prog('bench')} SUBCOMMAND --help' for a subcommand's options. {cli.EXIT_STATUS}",
    )
    subs = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subs.add_parser(name, help=module.HELP, description=module.__doc__, parents=[_common_options()],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        if getattr(module, "CONFIG_OVERRIDES", False):
            cli.add_set_option(sub)
        sub.set_defaults(run=module.run_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen benchmark; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's header
    try:
        args.overrides = cli.parse_sets(getattr(args, "set", None))
    except cli.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.wait_load is not None:
        log.info("load average %.2f; waiting until it is below %.2f", load_average(), args.wait_load)
        log.info("load average %.2f: starting", wait_for_quiet(args.wait_load))
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(cli.run(main))
