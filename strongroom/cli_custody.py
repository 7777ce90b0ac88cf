"""Operator commands of the custody area, registered into `strongroom`'s parser by `register`."""

from __future__ import annotations

from typing import Any


def register(leaf: Any, noun: Any) -> None:
    """Adds this area's nouns and actions; `leaf` and `noun` are `build_parser`'s helpers."""
