"""``python -m m3ter_provider.testing``: run the emulator."""

from .cli import main

raise SystemExit(main())
