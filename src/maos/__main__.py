"""``python -m maos``: the same as the ``maos`` command."""

from __future__ import annotations

from maos.cli import main

if __name__ == "__main__":
    main()
