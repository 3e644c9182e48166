"""The example's modules importable before it is installed (pip install puts them on the path too)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
