"""Errors of the embedded stack (tree drawn in :mod:`stack`)."""

from __future__ import annotations


class StackError(Exception):
    """Root of every error the embedded stack raises."""


class ArtifactError(StackError):
    def __init__(self, artifact: str, reason: str) -> None:
        super().__init__(artifact, reason)
        self.artifact = artifact
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"could not lay out {self.artifact}: {self.reason}. "
            "Check that PyPI is reachable, then run `outbox stack install` again."
        )


class PrerequisiteError(StackError):
    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what, fix)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} is missing: {self.fix}"


class ComponentStartError(StackError):
    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        super().__init__(component, reason, log_tail)
        self.component = component
        self.reason = reason
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = f"{self.component} did not start: {self.reason}"
        if self.log_tail:
            text += f"\n--- last lines of the {self.component} log ---\n{self.log_tail}"
        text += (
            f"\nFix the cause above and run `outbox stack up` again "
            f"(`outbox stack logs {self.component}` shows the whole log)."
        )
        return text


class StackStateError(StackError):
    def __init__(self, state_dir: str, reason: str) -> None:
        super().__init__(state_dir, reason)
        self.state_dir = state_dir
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} (state dir {self.state_dir}); start one with `outbox stack up`"
