"""YAML recipes: schema, loader (safe_load + registries only), stage registry and the runner.

>>> from netcompress.recipe import loads_recipe
>>> r = loads_recipe("model: {name: lenet5}\\nstages:\\n  - {type: export}\\n")
>>> [s.type for s in r.stage_list]
['export']
"""
from .errors import RecipeError
from .registry import (CALLBACKS, EXPORTERS, LOSSES, STAGES, VOCAB, StageParams, StageType, build_typed,
                       register_stage)
from .schema import Recipe, TrainSpec, load_recipe, loads_recipe, parse_recipe, recipe_to_dict


def run_recipe(*args, **kwargs):
    """See :func:`netcompress.recipe.runner.run_recipe`."""
    from .runner import run_recipe as run

    return run(*args, **kwargs)


__all__ = ["CALLBACKS", "EXPORTERS", "LOSSES", "Recipe", "RecipeError", "STAGES", "StageParams", "StageType",
           "TrainSpec", "VOCAB", "build_typed", "load_recipe", "loads_recipe", "parse_recipe", "recipe_to_dict",
           "register_stage", "run_recipe"]
