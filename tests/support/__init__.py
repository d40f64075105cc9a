"""Helpers for the tests (fixtures live in tests/conftest.py)."""
import os
from pathlib import Path

# Where tests leave screenshots and measured numbers: $CAMPUS_MFA_ARTIFACTS, else tests/artifacts.
ARTIFACTS = Path(os.environ.get("CAMPUS_MFA_ARTIFACTS")
                 or Path(__file__).resolve().parents[1] / "artifacts")
