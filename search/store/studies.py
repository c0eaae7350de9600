"""Find a study in a storage: by name, or the newest, with one wording for "not there".

Optuna numbers studies as it creates them, and the storage's public
``get_study_id_from_name`` tells the number, so "the newest" needs no private attribute.
Used by the export, the resume and the dashboards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:  # what BaseStorage.get_all_studies returns; Optuna does not re-export it
    from optuna.study._frozen import FrozenStudy

from hetconv.errors import ConfigError

RUN_A_SEARCH = "run a search first (python -m search.run --budget 3e8)"


def newest_first(storage: optuna.storages.BaseStorage) -> list[FrozenStudy]:
    """The storage's studies, the most recently created first, read without their trials."""
    return sorted(storage.get_all_studies(),
                  key=lambda study: storage.get_study_id_from_name(study.study_name),
                  reverse=True)


def find_study(storage: optuna.storages.BaseStorage, name: str | None, context: str = "",
               when_empty: str = RUN_A_SEARCH) -> str:
    """``name`` if the storage holds such a study, the newest study's name when ``name`` is
    None, else a :class:`ConfigError` that lists what the storage holds. ``context`` starts
    the message (``"--resume: "``), ``when_empty`` says what to do when there is no study."""
    names = [study.study_name for study in newest_first(storage)]
    if not names:
        raise ConfigError(f"{context}the storage holds no study; {when_empty}")
    if name is None:
        return names[0]
    if name not in names:
        shown = ", ".join(repr(n) for n in names[:5]) + (" …" if len(names) > 5 else "")
        raise ConfigError(f"{context}no study named {name!r} in this storage; it holds {shown}")
    return name


def open_study(storage: optuna.storages.BaseStorage, name: str | None,
               sampler: optuna.samplers.BaseSampler | None = None, context: str = "",
               when_empty: str = RUN_A_SEARCH) -> optuna.Study:
    """The study :func:`find_study` finds, loaded (with ``sampler``, for a search that goes on)."""
    return optuna.load_study(study_name=find_study(storage, name, context, when_empty),
                             storage=storage, sampler=sampler)
