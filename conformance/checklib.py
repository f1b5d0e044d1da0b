"""Tiny shared helpers for the Python conformance scripts.

Every check prints exactly one line to stdout: ``PASS name`` or
``FAIL name: reason``. Diagnostics go to stderr (conformance/run keeps them in
its work dir and shows them when a script fails).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable


class CheckFailed(Exception):
    pass


def expect(cond: Any, reason: str) -> None:
    if not cond:
        raise CheckFailed(reason)


class Reporter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.failed = 0
        self.passed = 0

    def _name(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"PASS {self._name(name)}", flush=True)

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        reason = " ".join(str(reason).split())[:400]
        print(f"FAIL {self._name(name)}: {reason}", flush=True)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run a synchronous check; returns its value, or None on failure."""
        try:
            value = fn()
        except CheckFailed as exc:
            self.fail(name, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - any crash is a failed check
            traceback.print_exc(file=sys.stderr)
            self.fail(name, f"{type(exc).__name__}: {exc}")
            return None
        self.ok(name)
        return value if value is not None else True

    async def arun(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run an async check (a zero-argument coroutine function)."""
        try:
            value = await fn()
        except CheckFailed as exc:
            self.fail(name, str(exc))
            return None
        except BaseException as exc:  # noqa: BLE001 - includes ExceptionGroup
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            traceback.print_exc(file=sys.stderr)
            self.fail(name, describe(exc))
            return None
        self.ok(name)
        return value if value is not None else True

    def skip_dependents(self, names: list[str], because: str) -> None:
        for name in names:
            self.fail(name, f"not run: {because}")

    def exit(self) -> None:
        sys.exit(1 if self.failed else 0)


def describe(exc: BaseException) -> str:
    """One-line description, unwrapping exception groups (anyio task groups)."""
    group = getattr(exc, "exceptions", None)
    if group:
        return " | ".join(describe(e) for e in group)
    return f"{type(exc).__name__}: {exc}"


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        print(f"missing environment variable {name}", file=sys.stderr)
        sys.exit(2)
    return value


def load_json(name: str) -> dict[str, Any]:
    """Load a JSON file written by conformance/run into $CONF_WORK."""
    return json.loads((Path(env("CONF_WORK")) / name).read_text())


def aud_list(aud: Any) -> list[str]:
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []
