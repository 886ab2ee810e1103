"""`emoverse models`: what the registry holds (a table, or --json), and its changes:
--promote, --rollback, --relink."""

import argparse
import json
import sys
from pathlib import Path

from emoverse import settings
from emoverse.emotions import check_label, model_name
from emoverse.errors import EmoverseError
from emoverse.judgements import JudgementStore, accuracy_or_warning
from emoverse.paths import RunPaths
from models.records import JUDGES


def models(args: argparse.Namespace, data_dir: Path) -> int:
    from models.registry.model_registry import ModelRegistry  # MLflow: see apps/cli/__init__

    emotion = check_label(args.emotion) if args.emotion else None

    writes = args.promote is not None or args.rollback
    if writes and emotion is None:
        raise EmoverseError("--promote and --rollback need --emotion")
    if args.relink:
        return relink(data_dir)
    if not writes and not settings.tracking_uri():
        if not data_dir.is_dir():
            raise EmoverseError(f"data dir {data_dir} does not exist; run `emoverse run` first")
        if not RunPaths(data_dir).registry_db.is_file():
            print(f"the registry under {data_dir} holds no models yet")
            return 0
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)  # creates nothing
    if not writes and (old := registry.stale_home()) is not None:
        print(
            f"emoverse: note: this registry's MLflow locations still name {old} (the data dir "
            "was moved or copied): stock MLflow loaders read there, or fail with \"No such "
            f"artifact\", until `emoverse models --data-dir {data_dir} --relink`",
            file=sys.stderr,
        )
    if writes:
        assert emotion is not None
        if args.promote is not None and registry.champion_version(emotion) == args.promote:
            print(f"{model_name(emotion)} v{args.promote} is already the champion; nothing changed")
            return 0
        registry = ModelRegistry.for_data_dir(data_dir)  # it exists: now as its writer
        if args.promote is not None:
            record = registry.promote(emotion, args.promote)
        elif (record := registry.rollback(emotion)) is None:
            print(
                f"{model_name(emotion)} has no champion again, as before the promotion; "
                "`generate` uses its newest version, with a warning"
            )
            return 0
        print(f"{model_name(emotion)} champion is now v{record.version} ({record.path})")
        return 0
    records = registry.list(emotion)
    human, readers, unreadable = accuracy_or_warning(
        JudgementStore(RunPaths(data_dir).judgements_db)
    )
    if unreadable:
        print(f"emoverse: warning: {unreadable}", file=sys.stderr)
    damage = _damaged(records)
    for r in records:
        if r.version in damage.get(r.emotion, {}):
            role = " (champion)" if "champion" in r.aliases else ""
            print(
                f"emoverse: warning: {model_name(r.emotion)} v{r.version}{role}: "
                f"{damage[r.emotion][r.version]}",
                file=sys.stderr,
            )
    if args.json:
        listed = []
        for r in records:
            share = human.get((r.emotion, r.version))
            problem = damage.get(r.emotion, {}).get(r.version)
            listed.append(
                {
                    **r.to_dict(),
                    "human_accuracy": share.to_dict() if share else None,
                    "human_readers": readers.get((r.emotion, r.version), 0),
                    "damaged": problem,
                }
            )
        print(json.dumps(listed, indent=2))
        return 0
    if not records:
        print(f"the registry under {data_dir} holds no models yet")
        return 0
    print(
        f"{'emotion':<13}{'version':>7}  {'aliases':<9}{'family':<22}{'fidelity NRC':<26}"
        f"{'fidelity Empath':<26}{'fidelity NADE':<26}{'NADE intensity':<16}{'human':<26}"
    )
    for r in records:
        evaluation = r.evaluation
        shares = [
            str(evaluation.fidelity_of(judge)) if evaluation and evaluation.n_samples else "-"
            for judge in JUDGES
        ]
        family = r.parent if r.emotion != "neutral" else f"base of v{r.version}'s family"
        human_share = human.get((r.emotion, r.version))
        nade = evaluation.judges.get("nade", {}) if evaluation else {}
        intensity = "-"
        if nade.get("mean_intensity") is not None:
            intensity = f"{nade['mean_intensity']:.3f}"
            if (test := nade.get("rank_test")) is not None:
                intensity += f" p={test['p_value']:.2g}"
        n_readers = readers.get((r.emotion, r.version), 0)
        human_text = f"{human_share} by {n_readers}" if human_share else "-"
        aliases = ",".join(r.aliases) or "-"
        if r.version in damage.get(r.emotion, {}):
            aliases += ",DAMAGED"
        print(
            f"{r.emotion:<13}{r.version:>7}  {aliases:<9}{family:<22}"
            + "".join(f"{share:<26}" for share in shares)
            + f"{intensity:<16}{human_text}"
        )
        if r.promotion:
            print(f"{'':<22}{r.promotion}")
    print(
        "shares: fidelity [95% Wilson interval] of n sampled poems (human: of n guesses, by "
        "so many readers); NADE intensity: the mean of its emotion over them, p: the one-sided "
        "rank test against the base; `emoverse report` explains them"
    )
    return 0


def _damaged(records: list) -> dict[str, dict[int, str]]:
    """emotion -> version -> what is wrong with its folder: the checks generation makes
    before loading one (the folder there, every recorded file of its recorded size and
    sha256, no pickle beside the safetensors)."""
    if not records:
        return {}
    from models.folders.model_folder import verify_weights
    from models.generation.generate import check_safetensors_only

    found: dict[str, dict[int, str]] = {}
    for r in records:
        folder = Path(r.path)
        try:
            if not folder.is_dir():
                raise EmoverseError(
                    f"model folder {folder} is missing; `emoverse run` re-trains it"
                )
            check_safetensors_only(folder)
            verify_weights(folder, r.weights)
        except EmoverseError as exc:
            found.setdefault(r.emotion, {})[r.version] = str(exc)
    return found


def relink(data_dir: Path) -> int:
    from models.registry.model_registry import ModelRegistry  # MLflow: see apps/cli/__init__

    if settings.tracking_uri():
        raise EmoverseError(
            "--relink is for the sqlite registry under a data dir; unset MLFLOW_TRACKING_URI"
        )
    if not RunPaths(data_dir).registry_db.is_file():
        raise EmoverseError(f"no model registry under {data_dir}; nothing to relink")
    registry = ModelRegistry.for_data_dir(data_dir)  # a writer relinks on opening
    if registry.relinked is None:
        print(f"the registry's locations already name {data_dir}; nothing changed")
    else:
        old, count = registry.relinked
        print(f"relinked {count} stored locations from {old} to {registry.data_dir}")
    return 0
