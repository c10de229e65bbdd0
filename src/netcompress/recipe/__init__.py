"""YAML recipes: schema, loader (safe_load + registries only), stages (one per verb, plus fine-tune, export and
sensitivity) and the runner.

>>> from netcompress.recipe import loads_recipe
>>> r = loads_recipe("model: {name: lenet5}\\nstages:\\n  - {type: export}\\n")
>>> [s.type for s in r.stage_list]
['export']
"""
from .errors import RecipeError
from .registry import STAGES, StageType, register_stage, stage_names
from .schema import Recipe, load_recipe, loads_recipe, parse_recipe, recipe_to_dict


def run_recipe(*args, **kwargs):
    """See :func:`netcompress.recipe.runner.run_recipe`."""
    from .runner import run_recipe as run

    return run(*args, **kwargs)


__all__ = ["Recipe", "RecipeError", "STAGES", "StageType", "load_recipe", "loads_recipe", "parse_recipe",
           "recipe_to_dict", "register_stage", "run_recipe", "stage_names"]
