"""``python -m helpers.config``: print the resolved settings as JSON.

The settings themselves live in :mod:`helpers.pipeline.config`.
"""

from helpers.pipeline.config import main

if __name__ == "__main__":
    raise SystemExit(main())
