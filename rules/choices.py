"""Choices of the rules app: accelerated formats and compression profiles."""

from django.db import models


class Format(models.TextChoices):
    ESTARGZ = "estargz", "eStargz"


class Compression(models.TextChoices):
    BEST = "best", "Best (smallest blobs)"
    FAST = "fast", "Fast (quicker conversion, bigger blobs)"


KIB = 1 << 10
MIB = 1 << 20
DEFAULT_CHUNK_SIZE = 4 * MIB
MIN_CHUNK_SIZE = 64 * KIB
MAX_CHUNK_SIZE = 64 * MIB
