"""Command line for the converter: `python -m converter COMMAND ...`.

`layer IN OUT [--prioritized PATH ... [--skip-missing]]` converts one layer file (tar, tar.gz or
tar.zst) to an eStargz blob and prints one JSON object: {"digest", "size", "diff_id", "toc_digest",
"uncompressed_size", "startup_bytes", "prioritized"}. A prioritized file missing from the layer is
an error, or with --skip-missing a warning on stderr.

`image SRC [--dest REF] [--suffix -apparate] [--platform os/arch ...] [--prioritized PATH ...]
[--insecure] [--username U --password-stdin] [--cache FILE]` converts an image in a registry into
its eStargz twin, each prioritized file in the layer where it really lives; a progress bar goes to
stderr when it is a terminal, warnings (prioritized files in no layer) to stderr, and a JSON
summary (`ImageResult.as_dict()`) to stdout.

Each subcommand lives in its own `add_*_command(subparsers)` function that registers its options
and a `handler(args) -> exit code`; `build_parser` lists them. Errors end with a one-line message
on stderr and an exit code from `EXIT_CODES`, so scripts can tell bad input from other failures.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings
from dataclasses import asdict

from . import __version__
from .cache import FileLayerCache
from .errors import ConversionError, InvalidOptionsError, LayerError, PrioritizedFileError
from .estargz import PROFILES, LayerOptions, convert_layer
from .image import DEFAULT_SUFFIX, ImageRefused, LayerProgress, convert_image
from .reference import InvalidReference, parse_reference
from .registry import RegistryClient, RegistryError, UnsupportedManifest

EXIT_OK = 0
EXIT_USAGE = 2  # bad command line or options (argparse uses 2 as well)
EXIT_BAD_INPUT = 3  # the input itself is unusable: corrupt, hostile or unsupported layer, missing file
EXIT_FAILURE = 4  # anything else: I/O errors writing the output, unexpected conversion failures
EXIT_REGISTRY = 5  # the registry failed: unreachable, TLS, auth, not found, protocol errors

# First matching class wins; subcommands may insert more specific classes at the front.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (InvalidOptionsError, EXIT_USAGE),
    (LayerError, EXIT_BAD_INPUT),
    (PrioritizedFileError, EXIT_BAD_INPUT),
    (ConversionError, EXIT_FAILURE),
    (OSError, EXIT_FAILURE),
]

ISAL_DEFAULT_LEVEL = 2
FAST_HELP = (f"fast mode: {PROFILES['fast']['compressor']} level {PROFILES['fast']['level']}, several times "
             "as fast, a few %% larger")
LEVEL_HELP = f"compression level (default {PROFILES['best']['level']}, {PROFILES['fast']['level']} with --fast"


def _compression(fast: bool, compressor: str | None, level: int | None) -> dict:
    """compressor and level from --fast, --compressor and --level (the named profiles by default)."""
    if compressor and compressor != PROFILES["best"]["compressor"]:
        profile = {"compressor": compressor, "level": ISAL_DEFAULT_LEVEL}
    else:
        profile = dict(PROFILES["fast" if fast else "best"])
    if level is not None:
        profile["level"] = level
    return profile


class InputFileError(Exception):
    """The input file named on the command line cannot be opened."""


EXIT_CODES.insert(0, (InputFileError, EXIT_BAD_INPUT))
EXIT_CODES[:0] = [(InvalidReference, EXIT_USAGE), (UnsupportedManifest, EXIT_BAD_INPUT),
                  (ImageRefused, EXIT_BAD_INPUT), (RegistryError, EXIT_REGISTRY)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converter",
                                     description="Convert container image layers to eStargz.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_layer_command(subparsers)
    add_image_command(subparsers)
    return parser


def _byte_size(text: str) -> int:
    """Parse 4194304, 4M, 4MiB, 512K, 64G (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = value[-1:] if value[-1:] in units else ""
    try:
        number = int(value[: len(value) - len(suffix)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 4194304, 4M, 64G)") from None
    return number * units[suffix]


def add_layer_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "layer", help="convert one layer file to eStargz",
        description="Convert a tar, tar+gzip or tar+zstd layer file to an eStargz blob and print "
                    'a JSON object {"digest", "size", "diff_id", "toc_digest", "uncompressed_size"}.')
    parser.add_argument("input", metavar="IN", help="layer file to read (compression is detected); - for stdin")
    parser.add_argument("output", metavar="OUT", help="eStargz blob to write (replaced only on success)")
    parser.add_argument("--chunk-size", type=_byte_size, default=LayerOptions.chunk_size, metavar="N",
                        help="uncompressed bytes per chunk of a large file (default 4MiB)")
    parser.add_argument("--level", type=int, metavar="N",
                        help=f"{LEVEL_HELP}, {ISAL_DEFAULT_LEVEL} with --compressor isal)")
    parser.add_argument("--prioritized", nargs="+", action="extend", default=[], metavar="PATH",
                        help="files to place first, in this order, for the snapshotter to prefetch")
    parser.add_argument("--skip-missing", action="store_true",
                        help="skip prioritized files the layer does not have, with a warning (default: error)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compressor", choices=["zlib-ng", "isal"],
                      help="deflate implementation (default zlib-ng; isal is several times as fast, and its "
                           "bytes depend on the CPU generation)")
    mode.add_argument("--fast", action="store_true",
                      help=FAST_HELP)
    parser.add_argument("--max-uncompressed", type=_byte_size, default=LayerOptions.max_uncompressed_bytes,
                        metavar="N", help="refuse layers that decompress to more than this (default 64G)")
    parser.add_argument("--workers", type=int, help="compression threads (default: number of CPUs)")
    parser.add_argument("--workdir", help="directory for temporary files (default: system temp dir)")
    parser.set_defaults(handler=run_layer)


def run_layer(args: argparse.Namespace) -> int:
    extra = {"workers": args.workers} if args.workers is not None else {}
    options = LayerOptions(chunk_size=args.chunk_size, prioritized_files=tuple(args.prioritized),
                           max_uncompressed_bytes=args.max_uncompressed, require_prioritized=not args.skip_missing,
                           **_compression(args.fast, args.compressor, args.level), **extra)
    if args.input == "-":
        source = sys.stdin.buffer
    else:
        try:
            source = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputFileError(f"cannot read {args.input}: {exc.strerror}") from None
    output_dir = os.path.dirname(os.path.abspath(args.output))
    try:
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".estargz-", delete=False) as out:
            try:
                result = convert_layer(source, out, options, workdir=args.workdir)
            except BaseException:
                out.close()
                os.unlink(out.name)
                raise
        os.replace(out.name, args.output)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    for path in options.normalized_prioritized_files:
        if path not in result.prioritized:
            print(f"warning: prioritized file '{path}' is not in the layer; skipped", file=sys.stderr)
    print(json.dumps(asdict(result)))
    return EXIT_OK


def add_image_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "image", help="convert an image in a registry to its eStargz twin",
        description="Convert every platform of an image (or those given with --platform) to eStargz and push "
                    "the result as <tag><suffix> in the same repository, or to --dest. Prints a JSON summary.")
    parser.add_argument("source", metavar="SRC", help="image address, e.g. registry.example.com/team/app:1.0")
    parser.add_argument("--dest", metavar="REF", help="where to push the result (default: SRC's tag + suffix)")
    parser.add_argument("--suffix", default=DEFAULT_SUFFIX, help=f"tag suffix of the result (default {DEFAULT_SUFFIX})")
    parser.add_argument("--platform", dest="platforms", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                        help="convert only this platform of a multi-platform image (repeatable)")
    parser.add_argument("--prioritized", nargs="+", action="extend", default=[], metavar="PATH",
                        help="files the workload reads first: each is placed first in the layer where it lives "
                             "in the image, for the snapshotter to prefetch; a file in no layer is a warning")
    parser.add_argument("--insecure", action="store_true",
                        help="allow plain HTTP and unverified TLS (HTTPS without verification is tried first)")
    parser.add_argument("--ca-file", metavar="PEM", help="extra CA certificates to trust for the registry")
    parser.add_argument("--username", metavar="U", help="registry user; the password is read with --password-stdin")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    parser.add_argument("--cache", metavar="FILE", help="JSON layer cache: reuse layers converted before")
    parser.add_argument("--chunk-size", type=_byte_size, default=LayerOptions.chunk_size, metavar="N",
                        help="uncompressed bytes per chunk of a large file (default 4MiB)")
    parser.add_argument("--level", type=int, metavar="N",
                        help=f"compression level (default {PROFILES['best']['level']}, or {PROFILES['fast']['level']} "
                             "with --fast)")
    parser.add_argument("--fast", action="store_true",
                        help=FAST_HELP)
    parser.add_argument("--workdir", help="directory for temporary files (default: system temp dir)")
    parser.set_defaults(handler=run_image)


class _ProgressBar:
    """One line per layer on a terminal: platform, layer n/N, a bar and the bytes read."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event: LayerProgress) -> None:
        label = f"{event.platform} layer {event.layer_index + 1}/{event.layer_count} {event.source_digest[7:19]}"
        if event.phase == "reused":
            self.stream.write(f"\r\x1b[K{label} reused from the cache\n")
        elif event.phase != "done":
            fraction = min(1.0, event.bytes_in / event.total) if event.total else 0.0
            bar = "#" * int(fraction * 30)
            state = "uploading" if event.phase == "upload" else f"{event.bytes_in / 1e6:.1f}/{event.total / 1e6:.1f} MB"
            self.stream.write(f"\r\x1b[K{label} [{bar:<30}] {fraction:4.0%} {state}")
            if event.phase == "upload":
                self.stream.write("\n")
        self.stream.flush()


def run_image(args: argparse.Namespace) -> int:
    source = parse_reference(args.source)
    destination = parse_reference(args.dest) if args.dest else None
    if args.password_stdin and not args.username:
        raise InvalidOptionsError("--password-stdin needs --username.")
    if args.username and not args.password_stdin:
        raise InvalidOptionsError("give the password with --password-stdin (never on the command line).")
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    options = LayerOptions(chunk_size=args.chunk_size, prioritized_files=tuple(args.prioritized),
                           **_compression(args.fast, None, args.level))
    ca_pem = None
    if args.ca_file:
        try:
            with open(args.ca_file) as handle:
                ca_pem = handle.read()
        except OSError as exc:
            raise InputFileError(f"cannot read {args.ca_file}: {exc.strerror}") from None
    if args.insecure:  # asked for explicitly: no warning per request
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    credentials = {"username": args.username, "password": password, "ca_bundle_pem": ca_pem}
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(RegistryClient.for_host(source.host, args.insecure, **credentials))
        target = None
        if destination and destination.host != source.host:
            target = stack.enter_context(RegistryClient.for_host(destination.host, args.insecure, **credentials))
        progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        result = convert_image(client, source, destination, options, platforms=args.platforms or None,
                               cache=FileLayerCache(args.cache) if args.cache else None, progress=progress,
                               suffix=args.suffix, destination_client=target, workdir=args.workdir)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(result.as_dict(), indent=2))
    return EXIT_OK


def exit_code_for(error: BaseException) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConversionError, InputFileError, OSError, RegistryError, InvalidReference) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
