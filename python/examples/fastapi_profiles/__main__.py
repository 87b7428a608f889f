"""``python -m examples.fastapi_profiles`` (from ``python/``, with ``src`` on ``PYTHONPATH``)."""

from examples.fastapi_profiles.app import main

raise SystemExit(main())
