#!/usr/bin/env python3
"""Start the orchestrator REST API: the Flask app served by waitress.

    python api_server.py [--host 127.0.0.1] [--port 8000] [--config config.yaml]

Settings come from config.yaml beside this file (see config.template.yaml). One server per
folder: it refuses to start while this folder's server runs, records itself in .server.json
(what quick-start.sh and check-status.sh use to find it), and ./quick-start.sh --stop stops it.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_PYTHON = os.path.join(HERE, ".venv", "bin", "python")
if (
    os.path.exists(VENV_PYTHON)
    and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(HERE, ".venv"))
    and not os.environ.get("ORCHESTRATOR_NO_VENV_REEXEC")
):
    # Run under the folder's own .venv (made by ./install.sh), whatever python started us.
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
sys.path.insert(0, HERE)

from orchestrator.cli.main import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    config = []
    if "--config" in argv:
        i = argv.index("--config")
        config, argv = argv[i : i + 2], argv[:i] + argv[i + 2 :]
    sys.exit(main([*config, "serve", *argv]))
