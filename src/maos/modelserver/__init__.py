"""The scripted model server: an Anthropic Messages API look-alike whose replies come from a
YAML script, so real agent CLIs run offline and deterministically. See docs/model-server.md."""

from __future__ import annotations

from maos.modelserver.app import create_app
from maos.modelserver.script import (
    AGENT_HEADER,
    Conversation,
    Script,
    ScriptError,
    load_script,
    parse_script,
)
from maos.modelserver.server import running_model_server, serve

__all__ = [
    "AGENT_HEADER",
    "Conversation",
    "Script",
    "ScriptError",
    "create_app",
    "load_script",
    "parse_script",
    "running_model_server",
    "serve",
]
