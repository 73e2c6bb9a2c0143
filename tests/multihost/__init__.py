"""Multi-host tests: each simulated host is a Linux network namespace on one private switch.

The harness, one concept per module:

- ``netns``: ``Topology`` builds the namespaces (one per host, plus a "switch" namespace
  holding the bridge), addresses them in a private /24, cuts and restores a host's link
  (``partition``/``heal``) and removes everything again; ``Host`` opens sockets from inside
  its namespace and runs programs there under the host's own hostname.
- ``processes``: ``Processes`` starts programs in a host's namespace with an explicit
  environment and log files, and reaps them all (SIGTERM, grace, SIGKILL, wait).
- ``redis_node``: ``RedisNode``, a real ``redis-server`` bound to a host's address, with or
  without append-only persistence, restartable on the same address and directory.
- ``maos_cli``: the argv and environment of ``maos`` processes on those hosts.
- ``run_log``: a run's event log (folded by MAOS's reducer) and the run index, read from
  inside a host's namespace.
- ``polling``: ``wait_until``, readiness by polling with a deadline instead of sleeps.
- ``conftest``: the fixtures (``make_topology``, ``processes``, ``make_redis``) that tie
  their lifetimes to a test, also when it fails.

Nothing is ever addressed in the root namespace and nothing outside the test's own subnet is
contacted. The tests skip when not root or when ``ip netns`` does not work.
"""
