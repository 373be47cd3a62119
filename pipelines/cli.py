"""The `w2s` command line.

    w2s setup                                     # embedded models and datasets (idempotent)
    w2s data --config configs/quickstart.yaml     # seeded splits
    w2s annotate --config configs/quickstart.yaml annotate.method=reliability
    w2s run configs/quickstart.yaml run_dir=runs/x
    w2s serve configs/serve.yaml model_dir=runs/align/reward_model/model   # reward model over HTTP (Ray Serve)

Every command takes a YAML config (positional or --config) and key=value overrides that win.
"""

from __future__ import annotations

import argparse
import os
import sys


def _log(msg: str) -> None:
    print(msg, flush=True)


def _load(args):
    from cluster.loader import load_config
    from pipelines.run import RunConfig

    path = args.config or args.config_pos
    if not path:
        raise ValueError("a config file is needed: w2s <command> --config FILE [key=value ...]")
    return load_config(RunConfig, path, args.overrides)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    parser = argparse.ArgumentParser(prog="w2s", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="fetch and convert the embedded models and datasets")
    for name, help_ in (("data", "build the seeded data splits"), ("annotate", "weak annotation with Ray Data"),
                        ("run", "the end-to-end job"), ("serve", "serve a reward model over HTTP (Ray Serve)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config_pos", nargs="?", metavar="CONFIG")
        p.add_argument("--config", "-c")
        p.add_argument("overrides", nargs="*", metavar="key=value")
    args, extra = parser.parse_known_args(argv)
    if args.command == "setup":
        from actors.embedded import setup_all

        setup_all(_log)
        return 0
    # argparse puts a first key=value into config_pos when --config is given
    if args.config and args.config_pos and "=" in args.config_pos:
        args.overrides.insert(0, args.config_pos)
        args.config_pos = None
    args.overrides += extra
    if args.command == "serve":
        return _serve(args)
    try:
        cfg = _load(args)
    except ValueError as e:
        print(f"w2s: bad config: {e}", file=sys.stderr)
        return 2
    from pipelines import run as runmod
    from pipelines.data import DataError
    from pipelines.runner import StageConflict, StageInterrupted

    until = {"data": "data", "annotate": "weak_labels", "run": None}[args.command]
    try:
        runmod.run(cfg, _log, until=until)
    except DataError as e:
        print(f"w2s: bad data: {e}", file=sys.stderr)
        return 2
    except StageConflict as e:
        print(f"w2s: run_dir conflict: {e}", file=sys.stderr)
        return 2
    except StageInterrupted as e:
        print(f"w2s: interrupted: {e}", file=sys.stderr)
        return 3
    return 0


def _serve(args) -> int:
    from cluster.loader import load_config
    from serving.config import ServeConfig

    try:
        cfg = load_config(ServeConfig, args.config or args.config_pos, args.overrides)
        from serving.server import serve_forever

        serve_forever(cfg, _log)
    except ValueError as e:
        print(f"w2s: bad config: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
