"""Importers: other tools' projects turned into MAOS plans, teams and shared state.

- ``maos.importers.claude_flow``: a Claude Flow (Ruflo) 3.x project (``maos import claude-flow``).
"""

from __future__ import annotations
