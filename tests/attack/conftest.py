"""The attack suite's fixtures live in harness.py (shared with the test modules, which import its helpers)."""
from tests.attack.harness import finished_run, sandbox  # noqa: F401 - fixtures
