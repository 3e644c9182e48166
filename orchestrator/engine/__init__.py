"""The engine: jobs, their workers and every state change. ``core.Engine`` is the facade; its parts
are submission, a worker's thread (``worker_thread``) and its attempts (``attempts``), scheduling,
choosing among candidates, nesting, settling workers, ending jobs (approvals, results, reporting), and taking over after a restart (``recovery``
decides, ``takeover`` acts). Every part takes one ``context.EngineContext`` (settings, workspace,
clock, tables and their lock ``tables.locked()``, announcer, metrics, executor, runner, checkout)
and reads it as its own attributes (``context.EnginePart``); it asks the engine for what only it does
through ``ctx.hooks`` (``context.EngineHooks``). ``assembly`` builds the parts and wires them.

In one sentence: a worker is started in ``core.Engine.dispatch`` (``Engine._start`` then
``Engine.start_thread``, which runs ``worker_thread.WorkerThread.run_worker`` on a pool thread),
each of its attempts is judged in ``attempts.Attempts.run`` (``_classify`` says how it ended,
``_after_attempt`` runs the quality steps, and ``run`` decides on a retry), workers whose work has
been read are settled together (``WorkerThread._settle``, the settling pass: one lock section, their
records written by ``settling.Settling.publish_finals``), and its job ends in ``ending.Ending.end_job``
(then ``conclude``) once its last worker is settled.

Imports every layer below it (``cluster``, ``webhooks``, ``index``, ``quality`` and down), never
``api`` or ``cli``.

Modules:

- ``core``: ``Engine``, the facade: builds the shared context, dispatches pending workers within the limits;
- ``assembly``: the parts built and wired to each other, the engine's monitor, admission and listeners;
- ``context``: ``EngineContext`` (what every part shares), ``EnginePart`` (a part's base) and ``EngineHooks``;
- ``submission``: admit, plan, create jobs; ``limits``: admission checks;
- ``worker_thread``: a worker's thread; ``attempts``: its attempts, retries, timeouts, failure classes;
- ``after_attempt``: the after-attempt steps in their order; ``scheduling``: a task graph's order;
- ``choosing``: a task's candidates settle into one winner; ``nesting``: a worktree worker's child jobs;
- ``settling``: a worker's end, its final record; ``ending``: a job's end: landed, reported, recorded;
- ``approvals``: a job held for a person; ``results``: a root's result landed, signed, published;
- ``reporting``: a tree's reports; ``pr_checks``: the pull request's checks and reviews sent back;
- ``continuing``: a finished worker's continue rounds; ``resolvers``: the engine's side of ``resolve``;
- ``recovery``: what a restart does with each worker (pure); ``takeover``: applies its decisions;
- ``queries``: every read; ``tables``: the in-memory state and its one lock; ``locked_only``: its guard;
- ``announce``: events and the tree's event log; ``pacing``: how often the loop looks again;
- ``garbage``: Python's garbage collector paced for a server that holds a tree's records.
"""
