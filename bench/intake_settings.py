"""Settings of the webhook intake benchmark's server: the console's own, with a bench-only URLconf.

bench/intake_urls.py adds one empty token-authenticated API view (the same-run baseline of
bench/webhook_intake.py) to the console's routes; production never loads this module.
"""

from console.settings import *  # noqa: F403

ROOT_URLCONF = "bench.intake_urls"
