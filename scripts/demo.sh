#!/usr/bin/env bash
# The demo: one task in words, planned and built by a team of real Claude Code agents.
#
# With ANTHROPIC_API_KEY set, real Claude plans and does the work (spend capped by --max-cost-usd).
# Without it, MAOS's scripted model server plays the model (src/maos/examples/demo/model-script.yaml):
# the CLIs, their tools (files written, pytest run through Bash) and the MAOS door are real.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
maos="$root/.venv/bin/maos"
task="Create a small Python package with a module, its tests and its docs"
work="$root/.maos/demo"
max_cost="${MAOS_DEMO_MAX_COST:-2.00}"

rm -rf "$work" && mkdir -p "$work" && cd "$work"
git init -q -b main
printf '# textstats\n' > README.md
git add README.md && git -c user.name=demo -c user.email=demo@localhost commit -q -m "empty project"

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${ANTHROPIC_API_KEY:-}" ] && [ -z "${ANTHROPIC_AUTH_TOKEN:-}" ]; then
    echo "no ANTHROPIC_API_KEY: the scripted model server plays Claude (set a key to use real Claude)"
    exec 3< <("$maos" model-server --script "$root/src/maos/examples/demo/model-script.yaml" --port 0 --quiet)
    server_pid=$!
    read -r line <&3
    export MAOS_ANTHROPIC_BASE_URL="${line##* }"
    echo "model server: $MAOS_ANTHROPIC_BASE_URL"
else
    echo "ANTHROPIC_API_KEY set: real Claude, spend capped at \$$max_cost (--max-cost-usd)"
fi

"$maos" run "$task" --agents 6 --max-cost-usd "$max_cost" --dashboard --dashboard-port "${MAOS_DEMO_PORT:-8765}"

run=$("$maos" runs --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["run_id"])')
echo
echo "The team's work is on branch maos/$run of $work:"
git --no-pager log --oneline --graph -n 20 "maos/$run"
echo
echo "Report: $work/.maos/runs/$run/REPORT.md    Inspect: cd $work && $maos status $run"
