// MAOS dashboard: one page fed by the run's event log over Server-Sent Events.
//
// Start: GET api/runs/{id}/state (the log folded on the server, with the DAG's levels and
// critical path), then an EventSource on api/runs/{id}/events?after=<its last_event_id>.
// Each event is applied here the way maos.events.apply does it for the fields shown; the
// browser resumes after a dropped connection with Last-Event-ID. Every number on the page
// comes from an event; what no event reports yet is shown as "—".
// Hand-written, no dependencies, nothing fetched from anywhere but this server.
"use strict";

(() => {
  // "interrupted": a task the log says runs, in a run no orchestrator drives (its agent is gone)
  const STATES = ["pending", "ready", "assigned", "running", "interrupted", "retry_wait", "succeeded", "failed", "skipped", "cancelled"];
  const TERMINAL = new Set(["succeeded", "failed", "skipped", "cancelled"]);
  const ACTIVE = new Set(["ready", "assigned", "running", "retry_wait"]);
  const SERIES_COLORS = { output: "#7aa2f7", messages: "#22c55e" };
  const MAX_TABLE_ROWS = 1000;
  const MAX_DAG_NODES = 2000;
  const MAX_LINES_PER_TASK = 2000;
  const RENDER_EVERY_MS = 200;
  // A dead orchestrator writes no event saying so: the server tells ("interrupted", from the
  // run's lease) in a new snapshot, asked for when the run goes quiet this long, and as often
  // while it is interrupted (events arriving then may be its resumption: sooner).
  const LIVENESS_CHECK_S = 10;
  const LIVENESS_RECHECK_S = 2;
  // The page learns that the server goes away from a long poll (api/server) that answers when
  // the server starts shutting down; once it no longer answers, the server has stopped.
  const SERVER_WAIT_S = 25;
  const OFF_PATH = new Set(["skipped", "cancelled"]);  // never on the critical path

  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ helpers
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  // No URL carries the dashboard token: the server traded ?token= for an HttpOnly cookie on
  // the first visit and redirected here without it; same-origin requests send that cookie.
  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // Event ids are opaque but increase: "42" (SQLite) or "1733000000000-3" (Redis).
  function compareIds(a, b) {
    const pa = String(a).split("-"), pb = String(b).split("-");
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
      const x = Number(pa[i] ?? 0), y = Number(pb[i] ?? 0);
      if (Number.isNaN(x) || Number.isNaN(y)) return String(a).localeCompare(String(b));
      if (x !== y) return x < y ? -1 : 1;
    }
    return 0;
  }

  function fmtDuration(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return "—";
    if (seconds < 0) seconds = 0;
    if (seconds < 10) return seconds.toFixed(2) + "s";
    if (seconds < 60) return seconds.toFixed(1) + "s";
    const s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600);
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    return `${m}m ${String(s).padStart(2, "0")}s`;
  }

  // Costs as $0.0123 (cents once a dollar is reached), never a 16-digit float.
  function fmtCost(usd) {
    if (usd == null || !Number.isFinite(usd)) return "—";
    return "$" + usd.toFixed(usd < 1 ? 4 : 2);
  }

  const fmtInt = (n) => (n == null ? "—" : Math.round(n).toLocaleString("en-US"));

  function fmtBytes(n) {
    if (n == null || !Number.isFinite(n)) return "—";
    if (n < 1024) return `${n} B`;
    if (n < 1048576) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + " KB";
    if (n < 1073741824) return (n / 1048576).toFixed(n < 10485760 ? 1 : 0) + " MB";
    return (n / 1073741824).toFixed(1) + " GB";
  }

  // An event time (Unix seconds) as the viewer's local clock time.
  const fmtClock = (ts) => (ts == null ? "—" : new Date(ts * 1000).toLocaleTimeString([], { hour12: false }));

  function fmtValue(value) {
    if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(3)));
    if (typeof value === "number") return fmtInt(value);
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  const median = (values) => {
    const sorted = [...values].sort((a, b) => a - b), mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function fmtCount(n) {
    if (n == null) return "—";
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1000).toFixed(n < 1e4 ? 1 : 0) + "k";
    return (n / 1e6).toFixed(1) + "M";
  }

  // The server's clock stamps the events; measure "now" on it.
  let clockOffset = 0;
  const serverNow = () => Date.now() / 1000 + clockOffset;

  // ------------------------------------------------------------------ the model
  const model = {
    runId: null,
    run: null,                 // {run_id, plan, status, started_at, finished_at, summary, usage}
    tasks: new Map(),          // id -> task (fields as in the snapshot)
    order: [],                 // task ids in plan order
    agents: new Map(),         // id -> agent
    dag: null,                 // {levels, critical_path}
    kinds: { agent_output: "output", message_sent: "messages" },
    series: new Map(),         // series name -> Map(second -> count)
    lines: new Map(),          // task id -> [{id, ts, agent_id, stream, text}] seen live
    checkpoints: [],
    appliedUpTo: "0",          // events up to this id are in the model
    selected: null,
    transcript: null,          // {taskId, lines, omitted, loadedUpTo}
  };

  let source = null;
  let heardAt = Date.now() / 1000;      // when the last event or snapshot arrived (page clock)
  let livenessAt = Date.now() / 1000;   // when a snapshot was last asked for to check liveness
  let resyncing = null;        // a pending state fetch; events that arrive meanwhile wait in `held`
  let held = [];
  const dirty = { agents: true, dag: true, dagStates: true, tasks: true, header: true, transcript: true, throughput: true, checkpoints: true, usage: true };

  function markAll() { for (const key of Object.keys(dirty)) dirty[key] = true; }

  function loadSnapshot(snapshot) {
    model.run = {
      run_id: snapshot.run_id, plan: snapshot.plan, status: snapshot.status, started_at: snapshot.started_at,
      finished_at: snapshot.finished_at, summary: snapshot.summary, agents_limit: snapshot.agents_limit,
      usage: snapshot.usage, logged_status: snapshot.logged_status,
      interrupted_since: snapshot.interrupted_since, hint: snapshot.hint,
      orchestrator: snapshot.orchestrator, orchestrator_epoch: snapshot.orchestrator_epoch,
    };
    heardAt = Date.now() / 1000;
    clockOffset = snapshot.server_time - Date.now() / 1000;
    model.tasks = new Map(snapshot.tasks.map((task) => [task.id, task]));
    model.order = snapshot.tasks.map((task) => task.id);
    model.agents = new Map(snapshot.agents.map((agent) => [agent.id, agent]));
    model.dag = snapshot.dag;
    model.kinds = snapshot.throughput.kinds;
    model.series = new Map();
    for (const [name, buckets] of Object.entries(snapshot.throughput.series)) {
      model.series.set(name, new Map(Object.entries(buckets).map(([second, count]) => [Number(second), count])));
    }
    model.checkpoints = snapshot.checkpoints || [];
    model.appliedUpTo = snapshot.last_event_id;
    markAll();
  }

  async function resync() {
    if (resyncing) return resyncing;
    resyncing = (async () => {
      try {
        const snapshot = await getJson(`api/runs/${encodeURIComponent(model.runId)}/state`);
        if (snapshot) loadSnapshot(snapshot);
      } finally {
        const waiting = held;
        held = [];
        resyncing = null;
        for (const [id, event] of waiting) onEvent(id, event);
        scheduleRender();
      }
    })();
    return resyncing;
  }

  // ------------------------------------------------------------------ applying events
  function agentOf(id) {
    let agent = model.agents.get(id);
    if (!agent) {
      agent = { id, role: "", runtime: null, state: "idle", task_id: null, last_task_id: null, attempt: 0, since: null, succeeded: 0, failed: 0,
                last_output: "", last_output_at: null, cpu_percent: null, rss_bytes: null, cost_usd: null };
      model.agents.set(id, agent);
    }
    return agent;
  }

  function freeAgentsOf(taskId, ts) {
    for (const agent of model.agents.values()) {
      if (agent.task_id === taskId) Object.assign(agent, { task_id: null, state: "idle", since: ts });
    }
  }

  const USAGE_FIELDS = ["cost_usd", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens"];
  function addUsage(total, more) {
    if (!more) return total;
    const sum = { ...(total || Object.fromEntries(USAGE_FIELDS.map((f) => [f, 0]))) };
    for (const f of USAGE_FIELDS) sum[f] += more[f] || 0;
    return sum;
  }

  // Reports of an attempt that is no longer the task's current one change nothing (as in apply()).
  const PER_ATTEMPT = new Set(["task_started", "task_succeeded", "task_failed", "task_requeued", "task_warning", "agent_api_retry"]);

  function count(event) {
    const name = model.kinds[event.type];
    if (!name) return;
    let buckets = model.series.get(name);
    if (!buckets) model.series.set(name, (buckets = new Map()));
    const second = Math.floor(event.ts);
    buckets.set(second, (buckets.get(second) || 0) + 1);
    dirty.throughput = true;
  }

  function checkLiveness(afterS) {
    const now = Date.now() / 1000;
    if (serverState === "gone" || !model.run || TERMINAL.has(model.run.status) || resyncing || now - livenessAt < afterS) return;
    livenessAt = now;
    resync();
  }

  function onEvent(id, event) {
    heardAt = Date.now() / 1000;
    if (model.run?.status === "interrupted") checkLiveness(LIVENESS_RECHECK_S);
    if (resyncing) { held.push([id, event]); return; }
    if (compareIds(id, model.appliedUpTo) <= 0) return;  // already in the snapshot
    if (event.type === "run_started" && !model.run) {
      held.push([id, event]);
      resync();
      return;
    }
    apply(id, event);
    model.appliedUpTo = id;
    scheduleRender();
  }

  function apply(id, event) {
    count(event);
    const task = event.task_id != null ? model.tasks.get(event.task_id) : null;
    if (task && PER_ATTEMPT.has(event.type) && event.attempt !== task.attempts) return;
    const changed = () => { dirty.tasks = dirty.dagStates = dirty.header = dirty.agents = true;
                            if (model.selected === event.task_id) dirty.transcript = true; };
    switch (event.type) {
      case "task_ready":
        if (!task) return;
        freeAgentsOf(event.task_id, event.ts);
        Object.assign(task, { state: "ready", ready_at: event.ts, retry_at: null, agent_id: null });
        changed();
        break;
      case "task_assigned": {
        if (!task) return;
        Object.assign(task, { state: "assigned", agent_id: event.agent_id, attempts: event.attempt, attempt_warnings: 0, last_api_retry: null, stalled: "", fitness: event.fitness || null });
        Object.assign(agentOf(event.agent_id), { task_id: event.task_id, last_task_id: event.task_id, attempt: event.attempt, state: "assigned", since: event.ts, last_output: "" });
        changed();
        break;
      }
      case "task_started":
        if (!task) return;
        Object.assign(task, { state: "running", started_at: event.ts });
        Object.assign(agentOf(event.agent_id), { task_id: event.task_id, last_task_id: event.task_id, attempt: event.attempt, state: "running", since: event.ts });
        changed();
        break;
      case "agent_output": {
        if (task) {
          task.last_output_at = event.ts;
          task.output_lines = (task.output_lines || 0) + 1;
        }
        const agent = agentOf(event.agent_id);
        if (event.text.trim()) agent.last_output = event.text.trim().slice(0, 300);
        agent.last_output_at = event.ts;
        let lines = model.lines.get(event.task_id);
        if (!lines) model.lines.set(event.task_id, (lines = []));
        lines.push({ id, ts: event.ts, agent_id: event.agent_id, attempt: task ? task.attempts : null, stream: event.stream, text: event.text });
        if (lines.length > MAX_LINES_PER_TASK * 1.5) lines.splice(0, lines.length - MAX_LINES_PER_TASK);
        dirty.agents = true;
        if (model.selected === event.task_id) dirty.transcript = true;
        dirty.tasks = true;
        break;
      }
      case "agent_stats": {
        const agent = agentOf(event.agent_id);
        Object.assign(agent, { cpu_percent: event.cpu_percent, rss_bytes: event.rss_bytes });
        dirty.agents = true;
        break;
      }
      case "task_added":
        resync();  // a new node in the DAG: take the server's layout
        break;
      case "task_stalled":  // ready, and no agent of the run can take it (docs/dashboard.md)
        if (!task) return;
        task.stalled = event.reason;
        changed();
        break;
      case "agent_lost":
        agentOf(event.agent_id).lost = event.reason;
        dirty.agents = true;
        break;
      case "task_warning":
        if (!task) return;
        task.warnings = [...(task.warnings || []), event.text];
        task.attempt_warnings = (task.attempt_warnings || 0) + 1;
        changed();
        break;
      case "agent_api_retry":
        if (!task) return;
        task.api_retries = (task.api_retries || 0) + 1;
        task.last_api_retry = { ts: event.ts, api_attempt: event.api_attempt, max_retries: event.max_retries,
                                error_status: event.error_status, error: event.error };
        changed();
        break;
      case "task_succeeded": {
        if (!task) return;
        Object.assign(task, { state: "succeeded", finished_at: event.ts, duration_s: event.duration_s, exit_code: event.exit_code, reason: "" });
        useUsage(task, event);
        const agent = agentOf(event.agent_id);
        agent.succeeded += 1;
        if (agent.task_id === event.task_id) Object.assign(agent, { task_id: null, state: "idle", since: event.ts });
        changed();
        break;
      }
      case "task_failed": {
        if (!task) return;
        task.failures = (task.failures || 0) + 1;
        const exhausted = event.final || task.failures >= task.max_attempts;  // as apply() decides
        Object.assign(task, { state: exhausted ? "failed" : "retry_wait", finished_at: event.ts, duration_s: event.duration_s,
                              exit_code: event.exit_code, reason: event.reason, retry_at: null });
        useUsage(task, event);
        const agent = agentOf(event.agent_id);
        agent.failed += 1;
        if (agent.task_id === event.task_id) Object.assign(agent, { task_id: null, state: "idle", since: event.ts });
        changed();
        break;
      }
      case "task_retried":
        if (!task) return;
        task.retry_at = event.retry_at;
        changed();
        break;
      case "task_requeued":
        if (!task) return;
        freeAgentsOf(event.task_id, event.ts);
        Object.assign(task, { state: "ready", ready_at: event.ts, agent_id: null, reason: event.reason });
        changed();
        break;
      case "task_skipped":
        if (!task) return;
        Object.assign(task, { state: "skipped", reason: event.because, finished_at: event.ts });
        changed();
        break;
      case "task_cancelled":
        if (!task) return;
        freeAgentsOf(event.task_id, event.ts);
        Object.assign(task, { state: "cancelled", reason: event.reason, finished_at: event.ts });
        changed();
        break;
      case "run_draining":
        if (model.run && model.run.status === "running") model.run.status = "draining";
        dirty.header = true;
        break;
      case "run_cancelling":
        if (model.run && !["succeeded", "failed", "cancelled"].includes(model.run.status)) model.run.status = "cancelling";
        dirty.header = true;
        break;
      case "run_finished":
        if (model.run) Object.assign(model.run, { status: event.status, summary: event.summary, finished_at: event.ts });
        dirty.header = true;
        // The final critical path uses every measured duration: take it from the server.
        setTimeout(() => resync(), 0);
        break;
      case "checkpoint_taken":
        model.checkpoints.push({ id, ...event });
        dirty.checkpoints = true;
        break;
      default:
        break;  // event types this page does not show (yet)
    }
  }

  function useUsage(task, event) {
    if (!event.usage) return;
    task.usage = addUsage(task.usage, event.usage);
    if (model.run) model.run.usage = addUsage(model.run.usage, event.usage);
    const agent = agentOf(event.agent_id);
    agent.cost_usd = (agent.cost_usd || 0) + (event.usage.cost_usd || 0);
    dirty.header = dirty.agents = dirty.usage = true;
  }

  // ------------------------------------------------------------------ needs attention
  // A task whose agent looks blocked (docs/dashboard.md): in its current attempt, repeated
  // warnings (denied tools…), a model-API retry with no output since (rate limits, overload),
  // or no output for longer than the task's idle timeout.
  function attentionOf(task) {
    const reasons = [];
    if (TERMINAL.has(task.state)) return reasons;
    if (task.state === "ready" && task.stalled) reasons.push(`no agent can take it: ${task.stalled}`);
    if ((task.attempt_warnings || 0) >= 2) {
      const last = (task.warnings || [])[task.warnings.length - 1] || "";
      reasons.push(`${task.attempt_warnings} warnings: ${last}`);
    }
    if (task.state !== "running") return reasons;
    const retry = task.last_api_retry;
    if (retry && retry.ts >= (task.last_output_at || 0)) {
      const status = retry.error_status ? `HTTP ${retry.error_status}` : "connection error";
      reasons.push(`waiting on the model API (${status}, retry ${retry.api_attempt}${retry.max_retries ? "/" + retry.max_retries : ""})`);
    }
    const since = Math.max(task.started_at || 0, task.last_output_at || 0);
    const quiet = serverNow() - since;
    if (since && task.idle_timeout_s && quiet > task.idle_timeout_s) {
      reasons.push(`no output for ${fmtDuration(quiet)} (idle timeout ${fmtDuration(task.idle_timeout_s)})`);
    }
    return reasons;
  }

  // ------------------------------------------------------------------ the critical path
  // As snapshot.critical_path computes it: the heaviest chain of dependencies, each task
  // weighing what it took (ended), how long it has run (running) or the median of the ended
  // ones (the rest; 1 s before any ended), never through a skipped or cancelled task. Running
  // tasks grow, so it is recomputed as the page renders; the DAG is redrawn when it changes.
  function criticalPath(now) {
    const ended = [];
    for (const task of model.tasks.values()) {
      if (task.duration_s != null && task.state !== "running") ended.push(task.duration_s);
    }
    const estimate = ended.length ? median(ended) : 1;
    const heaviest = new Map(), via = new Map();
    let last = null;
    for (const id of model.dag.levels.flat()) {
      const task = model.tasks.get(id);
      if (!task || OFF_PATH.has(task.state)) continue;
      const weight = task.state === "running" && task.started_at != null ? Math.max(0, now - task.started_at)
        : task.duration_s != null ? task.duration_s : estimate;
      let best = null;
      for (const dep of task.depends_on) {
        if (heaviest.has(dep) && (best === null || heaviest.get(dep) > heaviest.get(best))) best = dep;
      }
      heaviest.set(id, weight + (best === null ? 0 : heaviest.get(best)));
      via.set(id, best);
      if (last === null || heaviest.get(id) > heaviest.get(last)) last = id;
    }
    const path = [];
    for (let step = last; step !== null; step = via.get(step)) path.push(step);
    return path.reverse();
  }

  function updateCriticalPath() {
    if (!model.dag) return;
    const path = criticalPath(serverNow());
    if (path.join("\n") === model.dag.critical_path.join("\n")) return;
    model.dag.critical_path = path;
    const on = new Set(path);
    for (const task of model.tasks.values()) task.critical = on.has(task.id);
    dirty.dag = dirty.tasks = true;
  }

  // ------------------------------------------------------------------ rendering
  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer !== null) return;
    renderTimer = setTimeout(() => { renderTimer = null; render(); }, RENDER_EVERY_MS);
  }

  function render() {
    // clocks on screen move together: while the run goes on, every render refreshes them all
    if (model.run && !TERMINAL.has(model.run.status)) dirty.header = dirty.agents = true;
    if (dirty.dagStates || dirty.dag) updateCriticalPath();
    if (dirty.header) renderHeader();
    if (dirty.agents) renderAgents();
    if (dirty.dag) renderDag();
    if (dirty.dagStates) renderDagStates();
    if (dirty.tasks) renderTasks();
    if (dirty.transcript) renderTranscript();
    if (dirty.throughput) renderThroughput();
    if (dirty.checkpoints) renderCheckpoints();
    if (dirty.usage) renderUsage();
  }

  function tick() {  // elapsed times and idle checks move with the clock
    dirty.header = dirty.agents = true;
    const quiet = Date.now() / 1000 - heardAt > LIVENESS_CHECK_S;
    if (quiet || model.run?.status === "interrupted") checkLiveness(LIVENESS_CHECK_S);
    if (model.run && !TERMINAL.has(model.run.status)) dirty.tasks = dirty.dagStates = dirty.throughput = true;
    render();
  }

  function renderHeader() {
    dirty.header = false;
    const run = model.run;
    if (!run) return;
    $("plan-name").textContent = run.plan.name;
    $("plan-name").title = run.plan.description || run.plan.name;
    showServerBanner();
    const status = $("run-status");
    const interrupted = run.status === "interrupted";
    status.textContent = run.status;
    status.dataset.status = run.status;
    status.title = interrupted
      ? `no orchestrator drives this run (its log says ${run.logged_status}); ${run.hint}`
      : run.orchestrator
        ? `driven by ${run.orchestrator} under lease epoch ${run.orchestrator_epoch}`
        : "";
    const usage = run.usage;
    $("cost").textContent = usage ? "$" + usage.cost_usd.toFixed(usage.cost_usd < 1 ? 4 : 2) : "—";
    $("tokens").textContent = usage ? fmtCount(usage.input_tokens + usage.cache_read_tokens + usage.cache_creation_tokens) + " in · " + fmtCount(usage.output_tokens) + " out" : "—";
    for (const id of ["cost", "tokens"]) $(id).title = usage ? "summed over the attempts that reported usage" : "no usage events in this run's log yet";
    const end = run.finished_at ?? (interrupted && run.interrupted_since ? run.interrupted_since : serverNow());
    $("elapsed").textContent = run.started_at ? fmtDuration(end - run.started_at) : "—";
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    let attention = 0;
    for (const task of model.tasks.values()) {
      counts[task.state] += 1;
      if (attentionOf(task).length) attention += 1;
    }
    $("progress").textContent = `${counts.succeeded}/${model.tasks.size}`;
    // failed for good, counted the moment it happens (not when the run ends)
    $("failed").textContent = String(counts.failed);
    $("failed").parentElement.classList.toggle("on", counts.failed > 0);
    if (run.status !== shownStatus) {
      shownStatus = run.status;
      labelRuns();
      refreshRuns();
    }
    $("attention").textContent = String(attention);
    $("attention").parentElement.classList.toggle("on", attention > 0);
    $("counts").innerHTML = STATES.filter((s) => counts[s]).map((s) =>
      `<span class="chip s-${s}" data-state="${s}"><span class="swatch"></span>${s.replace("_", " ")} <b>${counts[s]}</b></span>`).join("");
    const summary = $("run-summary");
    if (interrupted) {
      const since = run.interrupted_since ? new Date(run.interrupted_since * 1000).toLocaleString() : "an unknown time";
      summary.hidden = false;
      summary.textContent = `Interrupted since ${since} (its last event): no orchestrator drives this run. To continue it, ${run.hint}.`;
      return;
    }
    summary.hidden = !(run.summary && run.status !== "succeeded");
    summary.textContent = run.summary || "";
  }

  function renderAgents() {
    dirty.agents = false;
    const agents = [...model.agents.values()];
    if (!agents.length) return;
    const busy = agents.filter((a) => a.state === "assigned" || a.state === "running").length;
    $("agents-note").textContent = `${busy} busy of ${agents.length}`;
    const now = serverNow();
    $("agents").innerHTML = agents.map((agent) => {
      const task = agent.task_id ? model.tasks.get(agent.task_id) : null;
      // an agent slot runs what its task needs: label it with its current or last task's runtime
      const lastTask = !task && agent.last_task_id ? model.tasks.get(agent.last_task_id) : null;
      const runtime = (task || lastTask)?.runtime ?? agent.runtime;
      const lastFailed = lastTask?.state === "failed";
      const attn = task ? attentionOf(task) : [];
      const cls = agent.state === "idle" ? "s-idle" : `s-${agent.state}`;
      const elapsed = (agent.state === "assigned" || agent.state === "running") && agent.since ? fmtDuration(now - agent.since) : "—";
      const dash = (value, fmt) => (value == null ? "—" : fmt(value));
      const running = agent.state === "running";  // samples are of the running attempt only
      const shown = task || lastTask;
      const idleText = lastTask
        ? `idle · last <span class="${lastFailed ? "fail-mark" : ""}">${lastFailed ? "✗ " : ""}${esc(lastTask.id)} ${esc(lastTask.state.replace("_", " "))}</span>`
        : "idle";
      return `<div class="agent ${cls}${shown ? " busy" : ""}${attn.length ? " attn" : ""}${lastFailed ? " last-failed" : ""}" data-agent="${esc(agent.id)}" data-state="${esc(agent.state)}" data-runtime="${esc(runtime || "")}"${shown ? ` data-task="${esc(shown.id)}"` : ""}>
        <div class="head"><span class="name">${esc(agent.id)}</span><span class="pill ${cls}">${esc(agent.state)}</span></div>
        <div class="role"${agent.capabilities?.length ? ` title="capabilities: ${esc(agent.capabilities.join(", "))}"` : ""}>${agent.lost ? `<span class="fail-mark" title="${esc(agent.lost)}">✗ lost</span> · ` : ""}${esc(agent.role || "—")}${runtime ? ` · <span class="runtime">${esc(runtime)}</span>` : ""} · ${agent.succeeded} done${agent.failed ? `, <span class="fail-mark">${agent.failed} failed</span>` : ""}</div>
        <div class="task${task ? "" : " none"}">${task ? `${attn.length ? `<span class="attn-mark" title="${esc(attn.join("; "))}">⚠ </span>` : ""}${esc(task.id)}${agent.attempt > 1 ? ` <span class="role">attempt ${agent.attempt}</span>` : ""}` : idleText}</div>
        <div class="last" title="${esc(agent.last_output)}">${task ? esc(agent.last_output) : ""}</div>
        <dl><dt>elapsed</dt><dt>cpu</dt><dt>rss</dt><dt>cost</dt>
          <dd>${elapsed}</dd><dd>${dash(running ? agent.cpu_percent : null, (v) => v.toFixed(0) + "%")}</dd>
          <dd>${dash(running ? agent.rss_bytes : null, fmtBytes)}</dd><dd>${dash(agent.cost_usd, fmtCost)}</dd></dl>
      </div>`;
    }).join("");
  }

  // The DAG: one column per level, dependencies on the left, edges as curves. Within a
  // level, tasks are ordered by the mean row of their dependencies to keep edges short.
  const dagNodes = new Map();
  function renderDag() {
    dirty.dag = false;
    dagNodes.clear();
    const box = $("dag");
    if (!model.dag) return;
    if (model.tasks.size > MAX_DAG_NODES) {
      box.innerHTML = `<p class="empty">${model.tasks.size} tasks: too many to draw; the table lists them.</p>`;
      return;
    }
    const W = 150, H = 34, GX = 56, GY = 10, PAD = 14;
    const row = new Map(), pos = new Map();
    let height = 0;
    model.dag.levels.forEach((level, x) => {
      const ordered = x === 0 ? level : [...level].sort((a, b) => bary(a) - bary(b));
      ordered.forEach((id, y) => { row.set(id, y); pos.set(id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) }); });
      height = Math.max(height, ordered.length);
    });
    function bary(id) {
      const deps = model.tasks.get(id).depends_on;
      if (!deps.length) return 0;
      return deps.reduce((sum, dep) => sum + (row.get(dep) ?? 0), 0) / deps.length;
    }
    const width = PAD * 2 + model.dag.levels.length * (W + GX) - GX;
    const svgHeight = PAD * 2 + height * (H + GY) - GY;
    const crit = model.dag.critical_path;
    const critEdges = new Set(crit.slice(1).map((id, i) => `${crit[i]}>${id}`));
    const critNodes = new Set(crit);
    const edges = [], critical = [];
    for (const id of model.order) {
      const to = pos.get(id);
      for (const dep of model.tasks.get(id).depends_on) {
        const from = pos.get(dep);
        const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2, mx = (x1 + x2) / 2;
        const path = `<path class="edge${critEdges.has(`${dep}>${id}`) ? " crit" : ""}" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
        (critEdges.has(`${dep}>${id}`) ? critical : edges).push(path);
      }
    }
    const nodes = model.order.map((id) => {
      const p = pos.get(id);
      const label = id.length > 19 ? id.slice(0, 18) + "…" : id;
      return `<g class="node${critNodes.has(id) ? " crit" : ""}" data-task="${esc(id)}" transform="translate(${p.x},${p.y})">
        <title></title><rect width="${W}" height="${H}" rx="5"/>
        <text x="8" y="14">${esc(label)}</text><text class="sub" x="8" y="27"></text></g>`;
    });
    box.innerHTML = `<svg width="${width}" height="${svgHeight}" viewBox="0 0 ${width} ${svgHeight}">
      <g>${edges.join("")}</g><g>${critical.join("")}</g><g>${nodes.join("")}</g></svg>`;
    for (const node of box.querySelectorAll(".node")) dagNodes.set(node.dataset.task, node);
    dirty.dagStates = true;
  }

  function renderDagStates() {
    dirty.dagStates = false;
    const now = serverNow();
    for (const [id, node] of dagNodes) {
      const task = model.tasks.get(id);
      const attn = attentionOf(task);
      const cls = `node s-${task.state}${node.classList.contains("crit") ? " crit" : ""}${attn.length ? " attn" : ""}${task.state === "failed" ? " failed" : ""}${model.selected === id ? " selected" : ""}`;
      if (node.getAttribute("class") !== cls) node.setAttribute("class", cls);
      node.dataset.state = task.state;
      let sub = (task.state === "failed" ? "✗ " : "") + task.state.replace("_", " ");
      if (task.state === "running" && task.started_at) sub += " " + fmtDuration(now - task.started_at);
      else if (task.duration_s != null && TERMINAL.has(task.state)) sub += " " + fmtDuration(task.duration_s);
      if (task.attempts > 1) sub += ` · #${task.attempts}`;
      const text = node.querySelector("text.sub");
      if (text.textContent !== sub) text.textContent = sub;
      node.querySelector("title").textContent = `${id} (${task.role}): ${task.state}${task.agent_id ? " on " + task.agent_id : ""}${attn.length ? " — " + attn.join("; ") : ""}`;
    }
  }

  function renderTasks() {
    dirty.tasks = false;
    const filter = $("task-filter").value.trim().toLowerCase();
    const stateFilter = $("state-filter").value;
    const now = serverNow();
    const rows = [];
    let matched = 0;
    for (const id of model.order) {
      const task = model.tasks.get(id);
      const attn = attentionOf(task);
      if (filter && !id.toLowerCase().includes(filter) && !(task.title || "").toLowerCase().includes(filter)) continue;
      if (stateFilter === "active" ? !ACTIVE.has(task.state) : stateFilter === "attention" ? !attn.length : stateFilter && task.state !== stateFilter) continue;
      matched += 1;
      if (rows.length >= MAX_TABLE_ROWS) continue;
      const duration = task.state === "running" && task.started_at ? now - task.started_at : task.duration_s;
      const notes = [...attn.map((r) => `<span class="attn-mark">⚠</span>${esc(r)}`)];
      if (task.reason && task.state !== "succeeded") notes.push(esc(task.reason));
      const warnings = task.warnings || [];
      if (warnings.length && !(task.attempt_warnings >= 2 && attn.length)) {
        notes.push(`<span title="${esc(warnings.join("\n"))}">${warnings.length} warning${warnings.length > 1 ? "s" : ""}: ${esc(warnings[warnings.length - 1])}</span>`);
      }
      if (task.api_retries) notes.push(`${task.api_retries} model API retr${task.api_retries > 1 ? "ies" : "y"}`);
      if (task.state === "retry_wait" && task.retry_at) notes.push(`retry in ${fmtDuration(task.retry_at - now)}`);
      const failed = task.state === "failed";
      rows.push(`<tr data-task="${esc(id)}" data-state="${task.state}" class="${task.critical ? "crit" : ""}${failed ? " failed" : ""}${model.selected === id ? " selected" : ""}">
        <td class="id" title="${esc(task.title)}">${failed ? `<span class="fail-mark" title="failed: no attempt left">✗ </span>` : ""}${esc(id)}</td><td><span class="pill s-${task.state}">${task.state.replace("_", " ")}</span></td>
        <td>${esc(task.agent_id || "")}</td><td class="num">${task.attempts}/${task.max_attempts}</td>
        <td class="num">${duration == null ? "—" : fmtDuration(duration)}</td><td class="num">${task.output_lines || 0}</td>
        <td class="warn">${notes.join("<br>")}</td></tr>`);
    }
    $("tasks").tBodies[0].innerHTML = rows.join("");
    $("tasks-note").textContent = matched > rows.length ? `showing ${rows.length} of ${matched} matching tasks` : "";
  }

  // "— attempt 2 —" before the first line of each attempt of a retried task
  function linesHtml(lines, view, retried) {
    const out = [];
    for (const line of lines) {
      const attempt = line.attempt ?? view.lastAttempt;
      if (attempt != null && attempt !== view.lastAttempt && (view.lastAttempt != null || attempt > 1 || retried)) {
        out.push(`<div class="attempt-sep" data-attempt="${esc(attempt)}">— attempt ${esc(attempt)} —</div>`);
      }
      view.lastAttempt = attempt;
      out.push(lineHtml(line));
    }
    return out.join("");
  }

  function lineHtml(line) {
    const started = model.run?.started_at ?? line.ts;
    return `<div class="line ${esc(line.stream)}" data-id="${esc(line.id)}"><span class="t">+${(line.ts - started).toFixed(2)}</span>` +
      `<span class="k">${esc(line.stream)}</span><span class="x">${esc(line.text)}</span></div>`;
  }

  function renderTranscript() {
    dirty.transcript = false;
    const id = model.selected;
    if (!id) return;
    const task = model.tasks.get(id);
    if (task) {
      const attn = attentionOf(task);
      const duration = task.state === "running" && task.started_at ? serverNow() - task.started_at : task.duration_s;
      $("transcript-meta").innerHTML = [
        `<span>state <span class="pill s-${task.state}">${task.state.replace("_", " ")}</span></span>`,
        `<span>agent <b>${esc(task.agent_id || "—")}</b></span>`,
        task.fitness ? `<span title="why it went to this agent: 0.4 capability + 0.3 workload + 0.3 history">fitness <b>${task.fitness.total.toFixed(2)}</b> (capability ${task.fitness.capability.toFixed(2)}, workload ${task.fitness.workload.toFixed(2)}, history ${task.fitness.history.toFixed(2)})</span>` : "",
        `<span>attempt <b>${task.attempts}/${task.max_attempts}</b></span>`,
        `<span>duration <b>${duration == null ? "—" : fmtDuration(duration)}</b></span>`,
        task.exit_code != null ? `<span>exit <b>${task.exit_code}</b></span>` : "",
        task.reason && task.state !== "succeeded" ? `<span>reason <b>${esc(task.reason)}</b></span>` : "",
        attn.length ? `<span class="attn-mark">⚠ ${esc(attn.join("; "))}</span>` : "",
      ].join("");
    }
    const view = model.transcript;
    if (!view || view.taskId !== id) return;
    const box = $("transcript");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
    const live = (model.lines.get(id) || []).filter((line) => compareIds(line.id, view.shownUpTo) > 0);
    if (view.fresh) {
      view.fresh = false;
      const head = view.omitted ? `<div class="omitted">${view.omitted} earlier lines not shown</div>` : "";
      const all = [...view.lines, ...live];
      view.lastAttempt = null;
      const retried = (task?.attempts || 0) > 1;
      box.innerHTML = head + (all.length ? linesHtml(all, view, retried) : `<p class="empty" id="no-output">no output yet</p>`);
      if (all.length) view.shownUpTo = all[all.length - 1].id;
      box.scrollTop = box.scrollHeight;
      return;
    }
    if (!live.length) return;
    $("no-output")?.remove();
    box.insertAdjacentHTML("beforeend", linesHtml(live, view, false));
    view.shownUpTo = live[live.length - 1].id;
    while (box.childElementCount > MAX_LINES_PER_TASK + 1) box.firstElementChild.remove();
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  async function selectTask(id) {
    if (!model.tasks.has(id)) return;
    model.selected = id;
    $("transcript-title").textContent = id;
    dirty.tasks = dirty.dagStates = dirty.transcript = true;
    $("transcript").innerHTML = `<p class="empty">loading…</p>`;
    render();
    let history = null;
    for (let delay = 1000; ; delay = Math.min(delay * 2, 8000)) {
      try {
        history = await getJson(`api/runs/${encodeURIComponent(model.runId)}/tasks/${encodeURIComponent(id)}/transcript`);
        break;
      } catch (error) {
        // a busy or restarting server: say so and ask again while the task is still selected
        if (model.selected !== id) return;
        $("transcript").innerHTML = `<p class="empty" id="transcript-error">could not load the transcript (${esc(error.message)}); trying again…</p>`;
        await new Promise((resolve) => setTimeout(resolve, delay));
        if (model.selected !== id) return;
      }
    }
    if (model.selected !== id) return;
    model.transcript = { taskId: id, lines: history ? history.lines : [], omitted: history ? history.omitted : 0,
                         shownUpTo: history ? history.last_event_id : "0", fresh: true };
    dirty.transcript = true;
    render();
  }

  function renderThroughput() {
    dirty.throughput = false;
    const box = $("throughput");
    const names = [...new Set([...Object.values(model.kinds), ...model.series.keys()])].sort();
    const start = model.run?.started_at;
    if (!start) { box.innerHTML = `<p class="empty">—</p>`; return; }
    const end = model.run.finished_at ?? serverNow();
    const first = Math.floor(start), last = Math.max(first + 1, Math.floor(end));
    const span = last - first + 1;
    const step = Math.max(1, Math.ceil(span / 240));      // at most 240 points
    const points = Math.ceil(span / step);
    const width = 600, height = 110, left = 34, bottom = 16, top = 6;
    const values = new Map();
    let peak = 1;
    for (const name of names) {
      const buckets = model.series.get(name) || new Map();
      const row = new Array(points).fill(0);
      for (const [second, n] of buckets) {
        const i = Math.floor((second - first) / step);
        if (i >= 0 && i < points) row[i] += n;
      }
      for (let i = 0; i < points; i++) { row[i] /= step; peak = Math.max(peak, row[i]); }
      values.set(name, row);
    }
    const x = (i) => left + (points <= 1 ? 0 : (i / (points - 1)) * (width - left - 4));
    const y = (v) => top + (1 - v / peak) * (height - top - bottom);
    const parts = [`<line class="axis" x1="${left}" y1="${height - bottom}" x2="${width}" y2="${height - bottom}"/>`,
      `<text class="tick" x="${left - 4}" y="${top + 8}" text-anchor="end">${peak.toFixed(peak < 10 ? 1 : 0)}</text>`,
      `<text class="tick" x="${left - 4}" y="${height - bottom}" text-anchor="end">0</text>`,
      `<text class="tick" x="${left}" y="${height - 3}">0s</text>`,
      `<text class="tick" x="${width - 4}" y="${height - 3}" text-anchor="end">${fmtDuration(span)}</text>`];
    const legend = [];
    for (const name of names) {
      const row = values.get(name);
      const color = SERIES_COLORS[name] || "#d8dee9";
      const has = model.series.has(name);
      if (has) {
        const line = row.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
        parts.push(`<polygon class="area" fill="${color}" points="${x(0)},${height - bottom} ${line} ${x(points - 1)},${height - bottom}"/>`);
        parts.push(`<polyline class="line" stroke="${color}" points="${line}"/>`);
      }
      const total = has ? [...model.series.get(name).values()].reduce((a, b) => a + b, 0) : null;
      const recent = has ? row[row.length - 1].toFixed(1) : "—";
      legend.push(`<span><span class="swatch series-${SERIES_COLORS[name] ? esc(name) : "other"}"></span>${esc(name)} <b>${recent}</b>/s · total <b>${total ?? "—"}</b></span>`);
    }
    if (!names.includes("messages")) legend.push(`<span><span class="swatch series-messages"></span>messages <b>—</b> (no message events in the log yet)</span>`);
    box.innerHTML = `<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none">${parts.join("")}</svg>`;
    $("throughput-legend").innerHTML = legend.join("");
  }

  function renderUsage() {
    dirty.usage = false;
    const usage = model.run?.usage;
    if (!usage) return;
    const costly = [...model.tasks.values()].filter((t) => t.usage).sort((a, b) => b.usage.cost_usd - a.usage.cost_usd).slice(0, 8);
    $("usage").innerHTML = `<ul>
      <li>cost <b>${fmtCost(usage.cost_usd)}</b></li>
      <li>input tokens <b>${fmtInt(usage.input_tokens)}</b> · cache read <b>${fmtInt(usage.cache_read_tokens)}</b> · cache write <b>${fmtInt(usage.cache_creation_tokens)}</b></li>
      <li>output tokens <b>${fmtInt(usage.output_tokens)}</b></li>
      ${costly.length ? `<li class="sub">costliest tasks</li>` : ""}
      ${costly.map((t) => `<li class="task-cost"><span>${esc(t.id)}</span><b>${fmtCost(t.usage.cost_usd)}</b> · ${fmtInt(t.usage.input_tokens + t.usage.cache_read_tokens + t.usage.cache_creation_tokens)} in · ${fmtInt(t.usage.output_tokens)} out</li>`).join("")}
    </ul>`;
  }

  function renderCheckpoints() {
    dirty.checkpoints = false;
    if (!model.checkpoints.length) return;
    $("checkpoints").innerHTML = "<ul>" + model.checkpoints.slice(-50).reverse().map((c) => {
      const { id, ts, type, checkpoint_id, bytes, duration_s, covers_events, location, ...rest } = c;
      const took = duration_s == null ? "—" : duration_s < 1 ? `${Math.max(1, Math.round(duration_s * 1000))} ms` : fmtDuration(duration_s);
      const parts = [`<b>${esc(fmtBytes(bytes))}</b>`, `in ${esc(took)}`];
      if (covers_events != null) parts.push(`${esc(fmtInt(covers_events))} events`);
      for (const [key, value] of Object.entries(rest)) parts.push(`${esc(key.replaceAll("_", " "))} ${esc(fmtValue(value))}`);
      const title = [checkpoint_id, location].filter(Boolean).join("\n");
      return `<li title="${esc(title)}"><span class="t">${esc(fmtClock(ts))}</span><span>${parts.join(" · ")}</span>` +
        `<span class="id">${esc(checkpoint_id ?? "")}</span></li>`;
    }).join("") + "</ul>";
  }

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.querySelector(".text").textContent = text || state;
  }

  // ------------------------------------------------------------------ the stream
  function connect() {
    if (source) source.close();
    const url = `api/runs/${encodeURIComponent(model.runId)}/events?after=${encodeURIComponent(model.appliedUpTo)}`;
    source = new EventSource(url);
    source.onopen = () => setConnection("live");
    source.onmessage = (message) => onEvent(message.lastEventId, JSON.parse(message.data));
    source.addEventListener("end", () => {
      source.close();
      setConnection("complete", "run complete");
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setConnection("error", "disconnected");
      else setConnection("reconnecting");
    };
  }

  async function openRun(runId) {
    model.runId = runId;
    let snapshot = null;
    try {
      snapshot = await getJson(`api/runs/${encodeURIComponent(runId)}/state`);
    } catch (error) {
      setConnection("error", String(error.message || error));
    }
    if (snapshot) loadSnapshot(snapshot);
    else $("agents").innerHTML = `<p class="empty">waiting for run ${esc(runId)} to start…</p>`;
    render();
    connect();
  }

  // The run selector: each run with its status now (api/runs: the log's, or "interrupted");
  // the open run's from this page, which follows its events.
  let knownRuns = [];
  let shownStatus = null;
  function fillRuns(runs, wanted) {
    knownRuns = runs.slice();
    if (!knownRuns.some((r) => r.run_id === wanted)) knownRuns.unshift({ run_id: wanted, name: "", status: "" });
    $("run-select").innerHTML = knownRuns.map((r) => `<option value="${esc(r.run_id)}"${r.run_id === wanted ? " selected" : ""}></option>`).join("");
    labelRuns();
  }

  function labelRuns() {
    const options = $("run-select").options;
    knownRuns.forEach((r, i) => {
      const status = r.run_id === model.runId && model.run ? model.run.status : r.status;
      const text = `${r.run_id}${r.name ? " — " + r.name : ""}${status ? " (" + status + ")" : ""}`;
      if (options[i] && options[i].textContent !== text) options[i].textContent = text;
    });
  }

  async function refreshRuns() {
    if (serverState === "gone") return;
    try {
      const index = await getJson("api/runs");
      if (index) fillRuns(index.runs, model.runId);
    } catch (error) {
      // the next status change asks again; the open run's own status is already shown
    }
  }

  // ------------------------------------------------------------------ the server going away
  let serverState = "up";  // up | stopping | gone
  function showServerBanner() {
    const banner = $("server-banner");
    const finished = model.run && TERMINAL.has(model.run.status);
    banner.hidden = serverState === "up";
    banner.dataset.state = serverState;
    if (serverState === "stopping") {
      banner.textContent = finished ? "run finished — server stopping" : "server stopping";
    } else if (serverState === "gone") {
      banner.textContent = finished
        ? "The server has stopped; this page shows the final state."
        : "The server has stopped; this page shows the run as it was when the server stopped.";
    }
  }

  function setServerState(next) {
    if (serverState === next) return;
    serverState = next;
    if (next === "gone" && (!source || source.readyState === EventSource.CLOSED)) setConnection("error", "server stopped");
    showServerBanner();
  }

  async function watchServer() {
    let failures = 0;
    for (;;) {
      let answer = null;
      try {
        const response = await fetch(`api/server?wait_s=${serverState === "up" ? SERVER_WAIT_S : 0}`, { cache: "no-store", credentials: "same-origin" });
        if (response.status === 404) return;  // a server without this route: nothing to watch
        if (!response.ok) { await sleep(5000); continue; }
        answer = await response.json();
      } catch (error) {
        failures += 1;  // no answer: stopped (after one retry, unless it said it was stopping)
        if (serverState === "stopping" || failures >= 2) setServerState("gone");
        await sleep(serverState === "gone" ? 5000 : 1000);
        continue;
      }
      failures = 0;
      if (answer.stopping) {
        setServerState("stopping");
        await sleep(300);
      } else if (serverState !== "up") {
        setServerState("up");  // it came back (a new server on the same address)
      }
    }
  }

  async function boot() {
    let index = null;
    try {
      index = await getJson("api/runs");
    } catch (error) {
      setConnection("error", String(error.message || error));
    }
    const wanted = params.get("run") || index?.selected;
    if (!wanted) {
      $("agents").innerHTML = `<p class="empty">no runs in this store yet; waiting…</p>`;
      setTimeout(boot, 2000);
      return;
    }
    const select = $("run-select");
    fillRuns(index?.runs || [], wanted);
    select.onchange = () => {
      const next = new URLSearchParams(location.search);
      next.set("run", select.value);
      next.delete("token");
      location.search = next.toString();
    };
    await openRun(wanted);
  }

  // ------------------------------------------------------------------ wiring
  // A task is picked by clicking it in the DAG, the task table or an agent card. Those are
  // drawn anew whenever the run moves (several times a second in a busy run), and a row
  // replaced between the button's press and its release gets no click event at all: the
  // task is picked when the button comes up over the task it went down on, drawn anew or not.
  // A click without a pointer (the keyboard, assistive technology) picks it too.
  const taskAt = (node) => {
    const target = node instanceof Element ? node.closest("[data-task]") : null;
    return target && (target.closest("#dag") || target.closest("#tasks") || target.closest("#agents")) ? target.dataset.task : null;
  };
  let pressed = null;
  let picked = null;
  document.addEventListener("pointerdown", (event) => {
    pressed = event.button === 0 ? taskAt(event.target) : null;
    picked = null;
  });
  document.addEventListener("pointerup", (event) => {
    picked = pressed !== null && taskAt(event.target) === pressed ? pressed : null;
    pressed = null;
    if (picked) selectTask(picked);
  });
  document.addEventListener("click", (event) => {
    const id = taskAt(event.target);
    if (id && id !== picked) selectTask(id);
    picked = null;
  });
  document.addEventListener("DOMContentLoaded", () => {
    $("task-filter").addEventListener("input", () => { dirty.tasks = true; render(); });
    $("state-filter").addEventListener("change", () => { dirty.tasks = true; render(); });
    setInterval(tick, 1000);
    boot();
    watchServer();
  });
  window.maosDashboard = model;  // for tests and for poking at in the console
})();
