"""`emoverse generate`: the request checked by apps/requests.py (as the server checks it),
then the poems from the emotion's model, a dialled one or a blend, on stdout; what wrote them,
and any warning, on stderr."""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from emoverse import settings
from emoverse.errors import EmoverseError
from emoverse.paths import RunPaths


def generate(args: argparse.Namespace, data_dir: Path) -> int:
    # torch and MLflow: see apps/cli/__init__.
    from apps.requests import FLAGS, OPTIONS, resolve
    from models.generation.blend import materialize, resolve_recipe
    from models.generation.choice import choose_model
    from models.generation.generate import PoemGenerator
    from models.registry.model_registry import ModelRegistry

    wanted = resolve(  # before a merge, so bad options never cost one
        emotion=args.emotion,
        model=args.model,
        strength=args.strength,
        blend=args.blend,
        options={name: getattr(args, name) for name in OPTIONS},
        names=FLAGS,
    )
    emotion, request = wanted.emotion, wanted.request
    local = not settings.tracking_uri()
    if local and data_dir.is_dir() and not RunPaths(data_dir).registry_db.is_file():
        raise EmoverseError(  # a reader creates no registry
            f"no {emotion or 'blended'} model with alias 'champion': no model registry under "
            f"{data_dir}; run `emoverse run` first"
        )
    registry = ModelRegistry.for_data_dir(data_dir, read_only=True)
    if wanted.weights is None:  # one model, its weights checked against the registry
        choice = choose_model(registry, emotion, args.model)
        record, request = choice.record, replace(request, control=choice.control)
        warnings = [choice.warning] if choice.warning else []
        folder, files, names = record.path, record.weights, choice.describe(emotion)
        if args.model == "best":
            print(f"# best for {emotion}: {choice.reason}", file=sys.stderr)
    else:
        recipe = resolve_recipe(registry, wanted.weights)
        warnings = [*recipe.warnings, *filter(None, [wanted.dial_warning])]
        folder, names = materialize(recipe, RunPaths(data_dir).blends), recipe.describe()
        files = None
    for warning in warnings:
        print(f"emoverse: warning: {warning}", file=sys.stderr)
    poems = PoemGenerator(folder, files).generate(request)
    print(f"# {names}, seed {args.seed}", file=sys.stderr)
    print("\n\n---\n\n".join(poems))
    return 0
