"""Publishing the study part by part: what a results directory holds of each part, and how a run of
some parts joins it.

The parts themselves, and which table kinds each computes, are declared in
:data:`prunelib.study.registry.PARTS`; this module derives from them the manifest's per-part
records, the report's list of parts (present, and missing with the command that computes them),
and the merge of a run's tables with the other parts' rows already published.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from prunelib.base import provenance
from prunelib.reporting.results import TABLES as RESULT_TABLES
from prunelib.reporting.results import Results, load_results
from prunelib.study.config import RECIPE_STUDY, ExperimentConfig
from prunelib.study.registry import PARTS, STUDY_CODE, entry_name, part_code, part_rows, parts_for, recompute_command


def datasets_of(part: str, datasets) -> tuple[str, ...]:
    """Those of ``datasets`` that ``part`` computes something for (the recipe study runs on
    :data:`~prunelib.study.config.RECIPE_STUDY`'s datasets only)."""
    return tuple(d for d in datasets if part != "recipes" or d in RECIPE_STUDY)


def run_entries(
    config: ExperimentConfig, *, command: str, preset: str | None, seconds: float | None
) -> dict[str, dict]:
    """The manifest records of everything ``config`` computes: one per (part, dataset)."""
    from prunelib.base.fingerprint import source_hashes

    record = {**asdict(config), "preset": preset}
    hashes = source_hashes()
    entries = {
        entry_name(part, d): provenance.part_record(
            part_code(part),
            command=command,
            recompute=recompute_command(part, d),
            preset=preset,
            seconds=seconds,
            config=record,
        )
        for part in parts_for(config)
        for d in datasets_of(part, config.datasets)
    }
    for entry in entries.values():  # the study's own code, file by file (report --check reads them too)
        entry["code"] = dict(sorted({**entry["code"], **{m: hashes[m] for m in STUDY_CODE}}.items()))
    return entries


def legacy_records(manifest: dict) -> dict[str, dict]:
    """Records for a manifest written before parts: its preset says which parts it holds, its one
    code record serves every part (it covers the code of all of them)."""
    from prunelib.base.fingerprint import closure

    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    preset = config.get("preset")
    datasets = [d for d in config.get("datasets", []) if isinstance(d, str)]
    held = list(PARTS) if preset == "full" else ["challenge"]
    out = {}
    for part in held:
        roots = part_code(part)
        for d in datasets_of(part, datasets):
            out[entry_name(part, d)] = {
                "commit": manifest.get("commit"),
                "command": manifest.get("command"),
                "recompute": recompute_command(part, d),
                "preset": preset,
                "machine": manifest.get("machine"),
                "seconds": None,
                "roots": list(roots),
                "code": {m: h for m, h in manifest["code"].items() if m in closure(roots)},
                "config": config,
            }
    return out


def published(results_dir: str | os.PathLike) -> dict[str, dict]:
    """The (part, dataset) records of ``results_dir``'s manifest, by :func:`entry_name` (empty: none)."""
    return provenance.manifest_parts(results_dir, legacy_records)


def parts_table(entries: dict[str, dict], datasets=None) -> pd.DataFrame:
    """The report's list of parts: per part, the datasets it holds and, for each one it lacks, the
    command that computes it."""
    from prunelib.data import DATASETS

    rows = []
    for name, part in PARTS.items():
        expected = datasets_of(name, datasets or tuple(DATASETS))
        have = [d for d in expected if entry_name(name, d) in entries]
        missing = [d for d in expected if d not in have]
        rows.append(
            {
                "part": name,
                "what": part.about,
                "present": ", ".join(have) or "-",
                "missing (command)": "; ".join(f"`{recompute_command(name, d)}`" for d in missing) or "-",
            }
        )
    return pd.DataFrame(rows)


def check_prerequisites(config: ExperimentConfig, results_dir: str | os.PathLike) -> None:
    """Refuse, before any work, a run of parts whose datasets have no challenge tables in
    ``results_dir`` and will not get them from this run (the report is built around the sweeps).

    Also refused: ``results_dir`` holding rows of a (part, dataset) that this run does not replace
    and that its manifest has no record of (a damaged manifest, or one written before parts): the
    new manifest could not vouch for them, and dropping them would lose them.

    Raises:
        ValueError: naming the dataset and the command that computes its challenge part, or the
            rows without a record and what to do with them.
    """
    held = published(results_dir)
    try:
        _check_recorded(config, results_dir, load_results(results_dir), held)
    except FileNotFoundError:  # no tables yet: nothing to vouch for
        pass
    if "challenge" in parts_for(config):
        return
    for d in config.datasets:
        if entry_name("challenge", d) not in held:
            raise ValueError(
                f"--part {' '.join(parts_for(config))}: {results_dir} holds no challenge tables of {d}; "
                f"compute them first (`{recompute_command('challenge', d)}`) or add challenge to --part"
            )


def _check_recorded(
    config: ExperimentConfig, results_dir: str | os.PathLike, before: Results, held: dict[str, dict]
) -> None:
    running = parts_for(config)
    for schema in RESULT_TABLES:
        old = getattr(before, schema)
        if old.empty:
            continue
        for part in PARTS:
            for d in old.loc[part_rows(part, schema, old), "dataset"].unique():
                if entry_name(part, d) in held or (part in running and d in config.datasets):
                    continue
                raise ValueError(
                    f"{results_dir} holds rows of part {part} for {d} that its manifest has no record of (it is "
                    f"damaged, or older than parts), so a run of --part {' '.join(running)} cannot publish beside "
                    f"them: give another --results folder, or recompute them too (`{recompute_command(part, d)}`)"
                )


def combiner(results: Results, config: ExperimentConfig, entries: dict[str, dict]):
    """What :func:`prunelib.reporting.results.publish` calls under the results directory's lock:
    the previous results with this run's (part, dataset) rows and records in place of theirs."""
    parts = parts_for(config)

    def combine(results_dir: Path) -> tuple[Results, dict[str, dict], pd.DataFrame]:
        try:
            before = load_results(results_dir)
        except FileNotFoundError:
            before = Results(sweep=pd.DataFrame())
        # under the lock, after any interrupted publish was undone: the same check as before the run,
        # on what is there now (rows no record vouches for are refused, never dropped or carried)
        kept = {n: e for n, e in published(results_dir).items() if n not in entries}
        _check_recorded(config, results_dir, before, kept)
        merged = {}
        for schema in RESULT_TABLES:
            old, new = getattr(before, schema), getattr(results, schema)
            if not old.empty:
                replaced = pd.Series(False, index=old.index)
                for part in parts:
                    replaced |= part_rows(part, schema, old)
                old = old[~(replaced & old["dataset"].isin(config.datasets))]
            frames = [f for f in (old, new) if not f.empty]
            merged[schema] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        combined = Results(**merged, distributions=results.distributions, seconds=results.seconds)
        held = {**kept, **entries}
        return combined, dict(sorted(held.items())), parts_table(held)

    return combine
