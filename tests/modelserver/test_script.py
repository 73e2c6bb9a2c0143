"""The script: loading and validation errors, matching on each field, rendering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import maos.modelserver
from maos.markers import WARM_UP_MESSAGE, WARM_UP_REPLY, task_message, task_note
from maos.modelserver import Conversation, Script, ScriptError, load_script, parse_script
from maos.modelserver.script import DEFAULT_TEXT, WARM_UP_RULE, estimate_tokens, match_conversation

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "maos" / "examples" / "model-scripts"


def test_public_api_is_locked() -> None:
    assert maos.modelserver.__all__ == [
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


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    script = load_script(path)
    assert script.rules


# --------------------------------------------------------------------------- validation


def problems(text: str) -> list[str]:
    with pytest.raises(ScriptError) as info:
        parse_script(text, source="s.yaml")
    return info.value.problems


def test_missing_tool_name_names_rule_and_field() -> None:
    text = """
rules:
  - reply: {text: a}
  - reply: {text: b}
  - reply:
      tool_calls: [{input: {x: 1}}]
"""
    assert problems(text) == ["s.yaml: rule 3: field 'reply.tool_calls[0].name': Field required"]


def test_every_problem_is_reported_one_per_line() -> None:
    text = """
rules:
  - match: {user: "(", bogus: 1}
    reply: {text: hi, stop_reason: finished}
  - times: 0
    reply: {text: hi}
"""
    found = problems(text)
    assert "s.yaml: rule 1: field 'match.bogus': unknown field" in found
    assert any(
        p.startswith("s.yaml: rule 1: field 'match.user': invalid regular expression '('") for p in found
    )
    assert any(p.startswith("s.yaml: rule 1: field 'reply.stop_reason': ") for p in found)
    assert any(p.startswith("s.yaml: rule 2: field 'times': ") for p in found)
    assert len(found) == 4


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("{}", "s.yaml: rule 1: field 'reply': a reply needs text, tool_calls or error"),
        (
            "{text: hi, error: {status: 529}}",
            "s.yaml: rule 1: field 'reply': an error reply has no text, tool_calls or stop_reason",
        ),
        ("{error: {status: 200}}", "s.yaml: rule 1: field 'reply.error.status': "),
        ("{text: hi, delay_s: -1}", "s.yaml: rule 1: field 'reply.delay_s': "),
        ("{text: hi, usage: {input_tokens: -5}}", "s.yaml: rule 1: field 'reply.usage.input_tokens': "),
    ],
)
def test_reply_shape_errors(reply: str, expected: str) -> None:
    [found] = problems(f"rules:\n  - reply: {reply}\n")
    assert found.startswith(expected)


def test_missing_reply() -> None:
    assert problems("rules:\n  - match: {turn: 1}\n") == ["s.yaml: rule 1: field 'reply': Field required"]


@pytest.mark.parametrize(
    ("match", "field"),
    [("{turn: 0}", "match.turn"), ("{tool_result: 3}", "match.tool_result"), ("{agent: [a]}", "match.agent")],
)
def test_match_field_errors(match: str, field: str) -> None:
    [found] = problems(f"rules:\n  - match: {match}\n    reply: {{text: x}}\n")
    assert found.startswith(f"s.yaml: rule 1: field '{field}': ")


def test_unknown_placeholder_is_refused_with_the_known_ones() -> None:
    text = r"""
rules:
  - match: {last_user: 'create (?P<path>\S+)'}
    reply:
      tool_calls: [{name: Write, input: {file_path: "${path}", content: "${nope}"}}]
default: {text: "${agent} ${path}"}
"""
    assert problems(text) == [
        "s.yaml: rule 1: field 'reply.tool_calls[0].input.content': unknown placeholder ${nope} "
        "(known: agent, model, path, rule, session, task, turn)",
        "s.yaml: default: field 'reply.text': unknown placeholder ${path} "
        "(known: agent, model, rule, session, task, turn)",
    ]


def test_default_and_top_level_errors() -> None:
    assert problems("default: {}\n") == ["s.yaml: default: a reply needs text, tool_calls or error"]
    assert problems("rule: []\n") == ["s.yaml: field 'rule': unknown field"]
    assert problems("- a\n- b\n") == ["s.yaml: the script must be a mapping with 'rules' (and 'default')"]


def test_yaml_syntax_error_names_the_line() -> None:
    [found] = problems("rules:\n  - reply: {text: hi\n  - x: [\n")
    assert re.match(r"s\.yaml: line \d+: invalid YAML: ", found)


def test_load_script_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"missing\.yaml: cannot read"):
        load_script(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - reply: {text: 5}\n")
    with pytest.raises(ScriptError) as info:
        load_script(bad)
    assert info.value.problems == [f"{bad}: rule 1: field 'reply.text': Input should be a valid string"]


def test_empty_script_answers_with_the_default_text() -> None:
    script = parse_script("")
    choice = script.choose(conversation(), {})
    assert choice.rule is None
    assert choice.reply.render(choice.variables).text == DEFAULT_TEXT


# --------------------------------------------------------------------------- conversations


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def text(t: str) -> dict[str, str]:
    return {"type": "text", "text": t}


def tool_result(content: Any, tool_use_id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}


def assistant_tool_use(name: str = "Write") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}],
    }


def conversation(
    messages: list[dict[str, Any]] | None = None,
    system: Any = "You are helpful.",
    tools: tuple[str, ...] = ("Bash", "Write", "mcp__maos__state_get"),
    headers: dict[str, str] | None = None,
) -> Conversation:
    body = {
        "model": "claude-test",
        "system": system,
        "messages": messages if messages is not None else [user(text("hello there"))],
        "tools": [{"name": n, "input_schema": {}} for n in tools],
    }
    return Conversation.from_request(body, headers)


def test_conversation_reads_a_claude_code_shaped_request() -> None:
    conv = conversation(
        messages=[
            user(text("<system-reminder>\nattribution\n</system-reminder>\n"), text("create a.txt")),
            {"role": "system", "content": [text("# Environment\n - Primary working directory: /w")]},
            assistant_tool_use(),
            user(tool_result([text("File created")]), text("<system-reminder>x</system-reminder>")),
            {"role": "system", "content": [text("reminder")]},
        ],
        system=[text("You are Claude Code."), text("MAOS_AGENT_ID=worker-7")],
        headers={"x-claude-code-session-id": "s-1"},
    )
    assert conv.agent == "worker-7"
    assert conv.session == "s-1"
    assert conv.turn == 2
    assert conv.user_texts == ("create a.txt",)
    assert conv.last_user_text == "create a.txt"
    assert conv.tool_results == ("File created",)
    assert "Primary working directory" in conv.system_text
    assert conv.tool_names == ("Bash", "Write", "mcp__maos__state_get")


def test_agent_header_wins_over_the_marker() -> None:
    conv = conversation(system="MAOS_AGENT_ID=from-prompt", headers={"x-maos-agent-id": "from-header"})
    assert conv.agent == "from-header"
    assert conversation(system="no marker").agent is None


def test_string_content_and_a_new_user_message_start_a_new_turn() -> None:
    conv = conversation(
        messages=[
            {"role": "user", "content": "first task"},
            {"role": "assistant", "content": [text("ok")]},
            {"role": "user", "content": "second task"},
        ]
    )
    assert conv.user_texts == ("first task", "second task")
    assert conv.last_user_text == "second task"
    assert conv.tool_results is None
    assert conv.turn == 2


# --------------------------------------------------------------------------- matching


def rule_matches(match_yaml: str, conv: Conversation) -> dict[str, str] | None:
    script = parse_script(f"rules:\n  - match: {match_yaml}\n    reply: {{text: x}}\n")
    return match_conversation(script.rules[0].match, conv)


TWO_TURNS = [user(text("please fix bug 42")), assistant_tool_use(), user(tool_result("Error: tests failed"))]


@pytest.mark.parametrize(
    ("match_yaml", "messages", "matches"),
    [
        ("{user: 'fix bug'}", TWO_TURNS, True),
        ("{user: '^please'}", TWO_TURNS, True),
        ("{user: 'Error'}", TWO_TURNS, False),  # tool results are not user text
        ("{last_user: 'bug \\d+'}", TWO_TURNS, True),
        ("{last_user: 'nothing'}", TWO_TURNS, False),
        ("{tool_result: true}", TWO_TURNS, True),
        ("{tool_result: false}", TWO_TURNS, False),
        ("{tool_result: '(?i)tests failed'}", TWO_TURNS, True),
        ("{tool_result: 'passed'}", TWO_TURNS, False),
        ("{tool_result: false}", TWO_TURNS[:1], True),
        ("{tool_result: 'x'}", TWO_TURNS[:1], False),
        ("{turn: 2}", TWO_TURNS, True),
        ("{turn: 1}", TWO_TURNS, False),
        ("{turn: 1}", TWO_TURNS[:1], True),
        ("{system: 'helpful'}", TWO_TURNS, True),
        ("{system: 'reviewer'}", TWO_TURNS, False),
        ("{tools: 'Write'}", TWO_TURNS, True),
        ("{tools: 'Writ'}", TWO_TURNS, False),  # tool names must match whole
        ("{tools: 'mcp__maos__.*'}", TWO_TURNS, True),
        ("{tools: 'mcp__github__.*'}", TWO_TURNS, False),
        ("{user: fix, turn: 2, tool_result: true, tools: Bash}", TWO_TURNS, True),
        ("{user: fix, turn: 3}", TWO_TURNS, False),  # every field must hold
        ("{}", TWO_TURNS, True),
    ],
)
def test_match_fields(match_yaml: str, messages: list[dict[str, Any]], matches: bool) -> None:
    assert (rule_matches(match_yaml, conversation(messages)) is not None) == matches


def test_system_matches_a_string_or_blocks() -> None:
    assert rule_matches("{system: 'review'}", conversation(system="You review code.")) is not None
    assert (
        rule_matches("{system: 'review'}", conversation(system=[text("a"), text("You review code.")]))
        is not None
    )
    assert rule_matches("{system: 'review'}", conversation(system=None)) is None


def test_agent_is_a_full_match_and_needs_an_agent() -> None:
    assert rule_matches("{agent: 'worker-1'}", conversation(system="MAOS_AGENT_ID=worker-1")) is not None
    assert rule_matches("{agent: 'worker-1'}", conversation(system="MAOS_AGENT_ID=worker-10")) is None
    assert rule_matches("{agent: 'worker-\\d+'}", conversation(system="MAOS_AGENT_ID=worker-10")) is not None
    assert rule_matches("{agent: '.*'}", conversation(system="no id here")) is None


def test_named_groups_are_collected() -> None:
    conv = conversation([user(text("create src/app.py now"))], system="MAOS_AGENT_ID=dev-3")
    groups = rule_matches(r"{last_user: 'create (?P<path>\S+)', agent: 'dev-(?P<n>\d)'}", conv)
    assert groups == {"path": "src/app.py", "n": "3"}


# --------------------------------------------------------------------------- choosing


COUNTED = """
rules:
  - name: overloaded-first
    match: {agent: flaky}
    times: 1
    reply: {error: {status: 529}}
  - match: {last_user: hello}
    times: 2
    reply: {text: "hello #${rule} to ${agent} on turn ${turn} of ${model}"}
  - reply: {text: "later"}
"""


def test_first_match_wins_and_times_counts_per_agent() -> None:
    script = parse_script(COUNTED)
    counters: dict[tuple[int, str], int] = {}
    flaky = conversation(system="MAOS_AGENT_ID=flaky")
    steady = conversation(system="MAOS_AGENT_ID=steady")
    assert [script.choose(flaky, counters).rule for _ in range(4)] == [1, 2, 2, 3]
    assert [script.choose(steady, counters).rule for _ in range(3)] == [2, 2, 3]
    assert counters == {(1, "flaky"): 1, (2, "flaky"): 2, (3, "flaky"): 1, (2, "steady"): 2, (3, "steady"): 1}


def test_render_fills_placeholders_and_makes_tool_ids() -> None:
    script = parse_script(
        r"""
rules:
  - match: {last_user: 'create (?P<path>\S+)'}
    reply:
      text: "${path} for ${agent}; literal $${path}; session ${session}"
      tool_calls:
        - name: Write
          input: {file_path: "${path}", nested: [{n: "${turn}"}, 7, true]}
        - name: mcp__maos__state_set
"""
    )
    conv = conversation(
        [user(text("create out/a.txt"))],
        system="MAOS_AGENT_ID=w1",
        headers={"x-claude-code-session-id": "abc"},
    )
    choice = script.choose(conv, {})
    rendered = choice.reply.render(choice.variables)
    assert rendered.text == "out/a.txt for w1; literal ${path}; session abc"
    first, second = rendered.tool_calls
    assert first.input == {"file_path": "out/a.txt", "nested": [{"n": "1"}, 7, True]}
    assert second.name == "mcp__maos__state_set"
    assert second.input == {}
    assert re.fullmatch(r"toolu_[0-9a-f]{24}", first.id)
    assert first.id != second.id
    assert rendered.stop_reason == "tool_use"


def test_stop_reason_defaults_and_overrides() -> None:
    script = parse_script("rules:\n  - reply: {text: hi, stop_reason: max_tokens}\ndefault: {text: bye}\n")
    assert script.rules[0].reply.effective_stop_reason == "max_tokens"
    assert script.default.effective_stop_reason == "end_turn"


def test_error_defaults_follow_the_status() -> None:
    script = parse_script(
        "rules:\n"
        "  - reply: {error: {status: 529}}\n"
        "  - reply: {error: {status: 429, message: slow down}}\n"
        "  - reply: {error: {status: 503}}\n"
        "  - reply: {error: {status: 418, type: teapot_error}}\n"
    )
    errors = [rule.reply.error for rule in script.rules]
    assert [(e.error_type if e else None) for e in errors] == [
        "overloaded_error",
        "rate_limit_error",
        "api_error",
        "teapot_error",
    ]
    assert errors[1] is not None
    assert errors[1].error_message == "slow down"


def test_script_objects_can_be_built_in_python() -> None:
    script = Script.model_validate({"rules": [{"reply": {"text": "hi"}}]})
    assert script.rules[0].match.user is None
    assert estimate_tokens(0) == 1
    assert estimate_tokens(9) == 3


def test_max_turn_ends_a_conversation_that_would_loop() -> None:
    script = parse_script("max_turn: 1\nrules:\n  - reply: {tool_calls: [{name: Bash}]}\n")
    assert script.choose(conversation(TWO_TURNS[:1]), {}).rule == 1
    choice = script.choose(conversation(TWO_TURNS), {})
    assert (choice.rule, choice.rule_name) == (None, "max_turn")
    rendered = choice.reply.render(choice.variables)
    assert rendered.stop_reason == "end_turn"
    assert rendered.tool_calls == ()
    assert parse_script("").max_turn == 100


# --------------------------------------------------------------------------- a warm agent's warm-up turn

# As Claude Code 2.1.332 sends it after the pool's `/cost` primer: one user message.
WARM_UP = user(
    text("<system-reminder>\nattribution\n</system-reminder>\n"),
    text("<local-command-caveat>The command below was run directly in Claude Code.</local-command-caveat>\n"),
    text("<command-name>/usage</command-name>\n"),
    text("<local-command-stdout>Estimated cost: $0.0000</local-command-stdout>\n"),
    text(WARM_UP_MESSAGE),
)
ENVIRONMENT = {"role": "system", "content": "# Environment\n - Primary working directory: /w"}
READY = {"role": "assistant", "content": [text(WARM_UP_REPLY)]}
TASK = "[MAOS task t, attempt 1]\n\nplease create a.txt"
ONCE = """
rules:
  - match: {turn: 1, last_user: '^\\[MAOS task t,'}
    times: 1
    reply: {text: "task on turn ${turn}"}
default: {text: "later"}
"""


def test_the_warm_up_turn_is_answered_before_the_rules_and_counts_for_none() -> None:
    script = parse_script(ONCE)
    counters: dict[tuple[int, str], int] = {}
    warm_up = conversation([WARM_UP, ENVIRONMENT], system="MAOS_AGENT_ID=a-1")
    assert warm_up.warm_up
    choice = script.choose(warm_up, counters)
    assert (choice.rule, choice.rule_name) == (None, WARM_UP_RULE)
    assert choice.reply.render(choice.variables).text == "ready"
    assert counters == {}
    # The task's first request: turn 1, as if the warm-up never happened.
    task = conversation([WARM_UP, ENVIRONMENT, READY, user(text(TASK))], system="MAOS_AGENT_ID=a-1")
    assert not task.warm_up
    choice = script.choose(task, counters)
    assert choice.rule == 1
    assert choice.reply.render(choice.variables).text == "task on turn 1"
    assert counters == {(1, "a-1"): 1}


def test_later_requests_do_not_see_the_warm_up_exchange() -> None:
    first = conversation([WARM_UP, ENVIRONMENT, READY, user(text(TASK))])
    assert (first.turn, first.last_user_text, first.tool_results) == (1, TASK, None)
    assert WARM_UP_MESSAGE not in "\n".join(first.user_texts)
    # What came before the task message (the primer's local command) is not the task's.
    assert "<command-name>/usage</command-name>\n" not in first.user_texts
    assert "Primary working directory" in first.system_text
    tool_round = [assistant_tool_use(), user(tool_result("File created"))]
    after = conversation([WARM_UP, ENVIRONMENT, READY, user(text(TASK)), *tool_round])
    assert (after.turn, after.last_user_text, after.tool_results) == (2, TASK, ("File created",))
    # A warm-up message with nothing else in it is left out whole; a second task is turn 2.
    alone = {"role": "user", "content": WARM_UP_MESSAGE}
    second = conversation([alone, READY, {"role": "user", "content": TASK}, READY, user(text("next"))])
    assert (second.turn, second.user_texts, second.warm_up) == (2, (TASK, "next"), False)


def test_a_local_command_before_the_task_message_is_not_the_user_s_words() -> None:
    """The pool's primer ends with ``/cost`` after the warm-up turn: the CLI records it in the
    task's message, before the task's text."""
    local = [b for b in WARM_UP["content"] if not b["text"].startswith(("<system", WARM_UP_MESSAGE))]
    first = conversation([WARM_UP, ENVIRONMENT, READY, user(*local, text(TASK))])
    assert (first.turn, first.task, first.last_user_text, first.user_texts) == (1, "t", TASK, (TASK,))
    choice = parse_script(ONCE).choose(first, {})
    assert choice.reply.render(choice.variables).text == "task on turn 1"


@pytest.mark.parametrize(
    "messages",
    [
        [user(text("please " + WARM_UP_MESSAGE))],  # not exactly the warm-up text
        [user(tool_result("ok"), text(WARM_UP_MESSAGE))],  # a tool result
        [WARM_UP, READY],  # answered already
        [WARM_UP, READY, user(text(TASK))],
    ],
)
def test_what_is_not_a_warm_up_turn(messages: list[dict[str, Any]]) -> None:
    assert not conversation(messages).warm_up


# ---------------------------------------------------------------------------- the current task


def test_a_cold_agent_s_task_comes_from_its_system_prompt() -> None:
    note = task_note(agent_id="agent-7", run_id="r1", task_id="design-2", title="Design it", attempt=2)
    conv = conversation([user(text("p"))], system=note)
    assert (conv.agent, conv.task, conv.turn) == ("agent-7", "design-2", 1)
    assert (
        match_conversation(
            parse_script("rules: [{match: {task: design-2}, reply: {text: x}}]").rules[0].match, conv
        )
        == {}
    )
    assert conversation([user(text("p"))]).task is None


def test_a_warm_agent_s_turns_and_texts_are_those_of_its_current_task() -> None:
    def message(task_id: str, prompt: str) -> str:
        return task_message(task_id=task_id, title="A title (with brackets)", attempt=1, prompt=prompt)

    first_task = [
        user(text(message("module", "write core.py"))),
        assistant_tool_use(),
        user(tool_result("ok")),
    ]
    done = {"role": "assistant", "content": [text("done")]}
    conv = conversation([*first_task, done, user(text(message("cli", "write __main__.py")))])
    assert (conv.task, conv.turn, conv.tool_results) == ("cli", 1, None)
    assert conv.user_texts == (message("cli", "write __main__.py"),)
    assert "write core.py" not in "\n".join(conv.user_texts)
    later = conversation(
        [*first_task, done, user(text(message("cli", "x"))), assistant_tool_use(), user(tool_result("y"))]
    )
    assert (later.task, later.turn, later.tool_results) == ("cli", 2, ("y",))
    script = parse_script(
        "rules: [{match: {task: cli, turn: 2}, reply: {text: 'task ${task}, turn ${turn}'}}]"
    )
    choice = script.choose(later, {})
    assert choice.rule == 1
    assert choice.variables["task"] == "cli"
