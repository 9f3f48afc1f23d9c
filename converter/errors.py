"""Errors raised by the converter.

Every failure the converter can explain is a `ConversionError` whose message says what is wrong
with which input, so a worker can record it as the job's reason and a person can act on it.
Subclasses tell bad input apart (the layer itself is unreadable, hostile or unsupported: retrying
will not help) from problems with the caller's request.
"""


class ConversionError(Exception):
    """Base class: the conversion failed for a reason stated in the message."""


class InvalidOptionsError(ConversionError):
    """The conversion options are invalid (level, chunk size, compressor, limits)."""


class LayerError(ConversionError):
    """The input layer cannot be converted; retrying with the same layer gives the same error."""


class CorruptLayerError(LayerError):
    """The layer is not a readable tar, tar+gzip or tar+zstd stream: garbage, corrupt or truncated."""


class UnsupportedLayerError(LayerError):
    """The layer is well formed but uses something the converter does not support (e.g. sparse files)."""


class HostileArchiveError(LayerError):
    """The layer tries something unsafe: names escaping the root, absurd sizes, oversized headers."""


class LayerTooLargeError(HostileArchiveError):
    """The layer decompresses to more bytes than the configured limit (a decompression bomb, or just huge)."""


class PrioritizedFileError(ConversionError):
    """A prioritized file (or the target of a prioritized hardlink) is not in the layer."""


class EstargzBlobError(ConversionError):
    """An existing blob is not a readable eStargz blob: a bad footer, a TOC out of bounds, too
    large or corrupt."""
