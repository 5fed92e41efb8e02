"""The alias rules, as pure functions of an :class:`AliasState` (no storage, no clock).

- register may point ``candidate`` at the new version;
- promote: ``previous`` takes the old ``stable``, ``stable`` takes the version, which joins the
  lineage (and stops being the candidate);
- rollback: the lineage loses its last version; ``stable`` is the one before it and
  ``previous`` the one before that, so repeated rollbacks step back one version each.

Written once here so the SQLite and Redis strategies only store what these decide.
"""

from __future__ import annotations

from dataclasses import dataclass

from buttress.registry.errors import NothingToRollBack
from buttress.registry.records import AliasState


@dataclass(frozen=True)
class Move:
    """A decided change: the new state, and the ``stable`` (or candidate) move it records."""

    state: AliasState
    alias: str | None
    from_version: str | None
    to_version: str | None


def register(state: AliasState, version: str, candidate: bool) -> Move:
    """Recorded in the history either way; only ``candidate`` moves an alias."""
    if not candidate:
        return Move(state.moved(state.aliases, state.lineage), None, None, version)
    aliases = {**state.aliases, "candidate": version}
    return Move(state.moved(aliases, state.lineage), "candidate",
                state.aliases.get("candidate"), version)


def promote(state: AliasState, version: str) -> Move | None:
    """``None`` when ``version`` is already stable: promoting twice changes nothing."""
    stable = state.aliases.get("stable")
    if stable == version:
        return None
    aliases = dict(state.aliases)
    aliases["stable"] = version
    if stable is not None:
        aliases["previous"] = stable
    if aliases.get("candidate") == version:
        del aliases["candidate"]
    return Move(state.moved(aliases, (*state.lineage, version)), "stable", stable, version)


def rollback(state: AliasState, name: str) -> Move:
    if len(state.lineage) < 2:
        raise NothingToRollBack(
            f"model {name!r} has no earlier stable version to roll back to "
            f"(stable history: {', '.join(state.lineage) or 'empty'})")
    lineage = state.lineage[:-1]
    aliases = dict(state.aliases)
    aliases["stable"] = lineage[-1]
    if len(lineage) >= 2:
        aliases["previous"] = lineage[-2]
    else:
        aliases.pop("previous", None)
    return Move(state.moved(aliases, lineage), "stable", state.lineage[-1], lineage[-1])
