"""CLI verbs (filled in by the issue that owns them)."""


def register(top, groups) -> None:
    pass
