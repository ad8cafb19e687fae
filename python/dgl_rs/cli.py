"""``dgl-rs``: the command line.

Subcommands::

    dgl-rs train --dataset msrvtt|vatex|lsmdc|activitynet|folder|synthetic [...]
    dgl-rs eval (--prompts P | --zero-shot) --dataset ... [--qb-norm] [--dsl]
    dgl-rs encode VIDEO_DIR (--prompts P | --zero-shot) --out INDEX
    dgl-rs search INDEX "a man is cooking" [-k 5]
    dgl-rs pretrain-synthetic [--out FILE]
    dgl-rs demo [--videos N --epochs E --num-frames T]

``dgl-rs COMMAND --help`` lists every flag. ``main(argv)`` returns the exit status
(tests call it directly). Usage errors (a missing dataset root, an unknown model, weights
that cannot be fetched offline, a missing file) print one ``dgl-rs COMMAND: error: ...``
line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence


def _train(argv):
    from .train.main import main

    return main(argv)


def _eval(argv):
    from .evaluate import main

    return main(argv)


def _pretrain(argv):
    from .pretrain import main

    return main(argv)


def _demo(argv):
    from .demo import main

    return main(argv)


# Commands with their own parser (prog "dgl-rs COMMAND"): argv goes through untouched.
DELEGATED: dict[str, tuple[Callable, str]] = {
    "train": (_train, "prompt-tune DGL on a dataset (torchrun for several GPUs/processes)"),
    "eval": (_eval, "evaluate prompts or the zero-shot baseline on a test split"),
    "pretrain-synthetic": (_pretrain, "pretrain the tiny CLIP of the synthetic benchmark"),
    "demo": (_demo, "synthetic benchmark: zero-shot meanP vs DGL-Linear vs DGL-Transformer"),
}


def build_parser() -> argparse.ArgumentParser:
    from .index import add_encode_arguments, add_search_arguments

    parser = argparse.ArgumentParser(
        prog="dgl-rs", description="DGL: dynamic global-local prompt tuning for text-video "
        "retrieval on a frozen open_clip backbone.")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"dgl-rs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    add_encode_arguments(sub.add_parser(
        "encode", help="embed a folder of videos into an index on disk",
        description="Embed every video under VIDEO_DIR once and write an index folder."))
    add_search_arguments(sub.add_parser(
        "search", help="text search in an index made by `dgl-rs encode`",
        description="Rank the indexed videos by cosine similarity to a text query."))
    return parser


def _fail(command: str, message: str) -> int:
    print(f"dgl-rs {command}: error: {message}", file=sys.stderr)
    return 2


def _video_error(exc: BaseException) -> Optional[str]:
    """The message of an unreadable-video error, also when a DataLoader worker raised it
    (torch re-raises it as a RuntimeError carrying the worker's traceback)."""
    from .data.video import VideoDecodeError

    if isinstance(exc, VideoDecodeError):
        return str(exc)
    tag = f"{VideoDecodeError.__module__}.{VideoDecodeError.__name__}: "
    if isinstance(exc, RuntimeError) and tag in str(exc):
        return str(exc).rsplit(tag, 1)[1].strip()
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .train.params import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    try:
        if command in DELEGATED:
            return int(DELEGATED[command][0](argv[1:]) or 0)
        args = build_parser().parse_args(argv)
        from .index import encode_main, search_main

        return {"encode": encode_main, "search": search_main}[args.command](args)
    except UsageError as exc:
        return _fail(command, str(exc))
    except FileNotFoundError as exc:
        return _fail(command, str(exc))
    except Exception as exc:
        message = _video_error(exc)
        if message is None:
            raise
        return _fail(command, f"{message} (pass --on-broken skip to leave such videos out)")
    except KeyboardInterrupt:
        print(f"dgl-rs {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
