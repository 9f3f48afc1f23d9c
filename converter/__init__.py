"""apparate's converter: turns container image layers into eStargz, the lazy-pulling layer format.

A plain Python package with no Django import, used by the Celery workers and by the command line
(`python -m converter`). `converter.estargz.convert_layer` converts one layer; the registry client
and image conversion build on it.
"""

__version__ = "0.1.0"
