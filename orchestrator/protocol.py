"""The names of the orchestrator's environment variables, defined once.

A worker learns who it is and how to start a child job from the variables the server
sets for it (README_FOR_AI.md documents them: they are the worker protocol, a product
contract, so a name here is never renamed). The server, the spawn helper, the API
client and the simulated worker all read these names from here.

This module imports nothing: the spawn helper (``orchestrator-spawn``) imports it on
every child job's critical path, where each module's start-up counts (see ``calls``).
"""

PREFIX = "ORCHESTRATOR"  # every name below starts with it; a worker never inherits one from the server

# -- the worker protocol: set by the server for every worker ------------------------------
API_URL = "ORCHESTRATOR_API_URL"  # where the worker reaches the API (only when recursion is on)
API_KEY = "ORCHESTRATOR_API_KEY"  # the worker's own credential, scoped to its job tree
# Instead of API_KEY where other processes can read a worker's environment (/proc shared: Landlock,
# Seatbelt): a file only that worker can read, holding the key (DESIGN §5).
API_KEY_FILE = "ORCHESTRATOR_API_KEY_FILE"
JOB_ID = "ORCHESTRATOR_JOB_ID"
ROOT_JOB_ID = "ORCHESTRATOR_ROOT_JOB_ID"
WORKER_ID = "ORCHESTRATOR_WORKER_ID"  # the worker's name, e.g. worker_2
DEPTH = "ORCHESTRATOR_DEPTH"  # the worker's depth (root job = 0)
MAX_RECURSION_DEPTH = "ORCHESTRATOR_MAX_DEPTH"  # the job's max_recursion_depth (the name is the protocol's, kept)
ENABLE_RECURSION = "ORCHESTRATOR_ENABLE_RECURSION"  # "1" or "0"
WORKER_DIR = "ORCHESTRATOR_WORKER_DIR"  # the worker's own folder (its working directory)
PORT = "ORCHESTRATOR_PORT"  # a worktree worker's own free port from git.port_range (also given to git.setup/teardown)
PYTHON = "ORCHESTRATOR_PYTHON"  # the server's interpreter, which orchestrator-spawn runs on
# The absolute path of the worker's job's shared context block (workers/sharedcontext.py), set only when
# its prompt starts with exactly that file's text: a kind that calls a model API marks it for caching.
SHARED_CONTEXT = "ORCHESTRATOR_SHARED_CONTEXT"
ATTEMPT = "ORCHESTRATOR_ATTEMPT"  # 1 for the first attempt, 2 for the first retry, ...
TAG = "ORCHESTRATOR_TAG"  # unique per worker: how its processes are found in /proc
SHIM_STASH = "ORCHESTRATOR_SHIM_"  # + NAME: the worker's own value of a variable the perl shim starts without

# -- the simulated worker's knobs (settings section ``simulated``) --------------------------
SIM_DURATION = "ORCHESTRATOR_SIM_DURATION"
SIM_FAIL_MATCHING = "ORCHESTRATOR_SIM_FAIL_MATCHING"
SIM_FAIL_ATTEMPTS = "ORCHESTRATOR_SIM_FAIL_ATTEMPTS"
SIM_RECURSE = "ORCHESTRATOR_SIM_RECURSE"

# -- read by the server and the command line, never given to a worker -----------------------
SETTINGS_PREFIX = "ORCHESTRATOR__"  # ORCHESTRATOR__SECTION__KEY=value overrides a setting
CONFIG = "ORCHESTRATOR_CONFIG"  # the config.yaml to read
HOME = "ORCHESTRATOR_HOME"  # the orchestrator folder, when not the package's parent
NO_VENV_REEXEC = "ORCHESTRATOR_NO_VENV_REEXEC"  # api_server.py: do not re-exec into .venv
FAILPOINTS = "ORCHESTRATOR_FAILPOINTS"  # the chaos tests' crash points (see failpoints)
DEFENCES_OFF = "ORCHESTRATOR_DEFENCES_OFF"  # the hostile suite's defences switched off (see defences; test-only)
STRICT_STATES = "ORCHESTRATOR_STRICT_STATES"  # "1": an illegal status change raises (tests; see states)
