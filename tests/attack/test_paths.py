"""Path tricks: --out a file, a symbolic link, a user's folder with a foreign run.json, the recipe or weights
inside --out, planted links in a run directory, paths with '..'. --force deletes only a directory
netcompress created, and never one holding the run's inputs."""
from __future__ import annotations

import json

import pytest
import yaml

from netcompress.core.io import save_weights
from netcompress.models import mlp
from tests.attack.harness import TINY, copy_run, refused


def _compress(sandbox, out, *extra, recipe=None):
    recipe = recipe or sandbox.recipe(TINY)
    return sandbox.run(["compress", recipe, "--out", out, "--no-progress", *extra])


OUT_TRICKS = {
    "a-file": ("precious.txt", (), "is a file"),
    "a-file-force": ("precious.txt", ("--force",), "is a file"),
    "link-to-folder": ("link", (), "symbolic link"),
    "link-to-folder-force": ("link", ("--force",), "symbolic link"),
    "dangling-link": ("dangling", ("--force",), "symbolic link"),
    "under-a-file": ("precious.txt/run", (), "precious.txt"),
    "foreign-run-json-force": ("thesis", ("--force",), "not created by netcompress"),
    "foreign-run-json-resume": ("thesis", ("--resume",), "no run marker"),
    "foreign-run-json": ("thesis", (), "pass --resume"),
    "cwd-force": (".", ("--force",), "not created by netcompress"),
    "parent-force": ("..", ("--force",), "not created by netcompress"),
    "dotdot-into-thesis-force": ("thesis/../thesis", ("--force",), "not created by netcompress"),
}


@pytest.mark.parametrize("name", list(OUT_TRICKS))
def test_out_tricks_delete_nothing(sandbox, name):
    out, extra, words = OUT_TRICKS[name]
    (sandbox.root / "link").symlink_to(sandbox.root / "thesis")
    (sandbox.root / "dangling").symlink_to(sandbox.root / "nowhere")
    refused(_compress(sandbox, out, *extra), words)
    assert (sandbox.root / "thesis" / "chapter1.tex").read_text() == "four years of work\n"


FORGED = {
    "bad-format": {"format": "netcompress.run-dir/0", "run_id": "0" * 32},
    "bad-run-id": {"format": "netcompress.run-dir/1", "run_id": "../../etc"},
    "not-json": None,
    "id-mismatch": {"format": "netcompress.run-dir/1", "run_id": "a" * 32},  # run.json carries none
}


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_markers_do_not_unlock_force(sandbox, name):
    marker = sandbox.root / "thesis" / ".netcompress-run"
    marker.write_text("{not json" if FORGED[name] is None else json.dumps(FORGED[name]))
    refused(_compress(sandbox, "thesis", "--force"), "not created by netcompress")
    assert sorted(p.name for p in (sandbox.root / "thesis").iterdir()) == [".netcompress-run", "chapter1.tex",
                                                                           "run.json"]


def test_force_replaces_a_run_netcompress_made(sandbox, finished_run):
    """Positive control: --force on our own run directory replaces it (with a new run id)."""
    recipe, run = copy_run(finished_run, sandbox)
    old_id = json.loads((run / ".netcompress-run").read_text())["run_id"]
    (run / "stale-note.txt").write_text("from the old run")
    result = sandbox.run(["compress", recipe, "--out", run, "--force", "--no-progress"], out=run)
    assert result.code == 0, result.err
    assert not (run / "stale-note.txt").exists()
    new_id = json.loads((run / ".netcompress-run").read_text())["run_id"]
    assert new_id != old_id and json.loads((run / "run.json").read_text())["run_id"] == new_id


def _inputs_inside(sandbox, finished_run, what):
    recipe, run = copy_run(finished_run, sandbox)
    if what == "recipe":
        inner = run / "inner.yaml"
        inner.write_text(recipe.read_text())
        return ["compress", inner, "--out", run, "--force"], inner
    if what == "weights":
        weights = run / "checkpoints" / "baseline.safetensors"
        return ["compress", recipe, "--out", run, "--force", "--weights", weights], weights
    if what == "recipe-weights":
        spec = {**TINY, "model": {**TINY["model"], "weights": "run/checkpoints/baseline.safetensors", "pretrain": None}}
        other = sandbox.recipe(spec, "w.yaml")
        return ["compress", other, "--out", run, "--force"], run / "checkpoints" / "baseline.safetensors"
    data = run / "idx"
    _fake_idx(data)
    return ["compress", recipe, "--out", run, "--force", "--data-dir", data], data


def _fake_idx(folder, n=48):
    from tests.data.test_data import _fake_mnist_folder

    folder.mkdir(parents=True)
    _fake_mnist_folder(folder, n, n // 2)


@pytest.mark.parametrize("what", ["recipe", "weights", "recipe-weights", "data-dir"])
def test_force_refuses_a_run_dir_holding_the_runs_own_inputs(sandbox, finished_run, what):
    argv, inside = _inputs_inside(sandbox, finished_run, what)
    refused(sandbox.run(argv), "inside --out", "--force would delete")
    assert inside.exists()


def test_planted_symlink_in_a_run_dir_blocks_resume(sandbox, finished_run):
    recipe, run = copy_run(finished_run, sandbox)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(sandbox.root / "precious.txt")  # an append would land in the user's file
    refused(sandbox.run(["compress", recipe, "--out", run, "--resume"]), "symbolic link")
    assert (sandbox.root / "precious.txt").read_text() == "keep me\n"


RECIPE_PATHS = {
    "weights-dotdot-passwd": ({"model": {"name": "mlp", "kwargs": {"hidden": [16]},
                                         "weights": "../../../../../../../etc/passwd"}}, "/etc/passwd"),
    "weights-dev-zero": ({"model": {"name": "mlp", "kwargs": {"hidden": [16]}, "weights": "/dev/zero"}},
                         "not a regular file"),
    "data-dir-dotdot": ({"data": {"name": "mnist_idx", "data_dir": "../../../../../../../etc"}}, "not found in"),
    "data-dir-missing": ({"data": {"name": "mnist_idx", "data_dir": "nope"}}, "does not exist"),
    "mnist-idx-without-folder": ({"data": {"name": "mnist_idx"}}, "needs a folder"),
}


@pytest.mark.parametrize("name", list(RECIPE_PATHS))
def test_recipe_paths_that_lead_nowhere(sandbox, name, monkeypatch):
    monkeypatch.delenv("NETCOMPRESS_DATA_DIR", raising=False)
    patch, words = RECIPE_PATHS[name]
    recipe = sandbox.recipe({**TINY, **patch})
    out = sandbox.root / "run"
    refused(_compress(sandbox, out, recipe=recipe), words)
    assert not out.exists()


def test_failed_start_leaves_nothing_and_the_retry_needs_no_force(sandbox):
    """A bad --weights fails after the recipe loaded: no run directory; the corrected command then runs."""
    out = sandbox.root / "run"
    bad = sandbox.root / "bad.safetensors"
    bad.write_bytes(b"not weights")
    refused(_compress(sandbox, out, "--weights", bad), "corrupt")
    assert not out.exists()
    good = save_weights(mlp(input_size=8, hidden=(16,)), sandbox.root / "good.safetensors")
    result = sandbox.run(["compress", sandbox.root / "r.yaml", "--out", out, "--no-progress", "--weights", good],
                         out=out)
    assert result.code == 0, result.err


FILE_OUTS = {
    "export-to-directory": (["export", "--model", "lenet_300_100", "--out", "thesis"], "is a directory"),
    "export-existing": (["export", "--model", "lenet_300_100", "--out", "precious.txt"], "--force"),
    "export-under-a-file": (["export", "--model", "lenet_300_100", "--out", "precious.txt/m.onnx"], "precious.txt"),
    "train-existing": (["train", "--model", "mlp", "--data", "digits", "--out", "precious.txt"], "--force"),
    "train-to-directory": (["train", "--model", "mlp", "--data", "digits", "--out", "thesis", "--force"],
                           "is a directory"),
    "sensitivity-existing-stem": (["sensitivity", "--model", "mlp", "--weights", "w.safetensors", "--data", "digits",
                                   "--out", "precious"], "--force"),
}


@pytest.mark.parametrize("name", list(FILE_OUTS))
def test_file_outputs_never_clobber(sandbox, name):
    (sandbox.root / "precious.csv").write_text("keep")
    save_weights(mlp(input_size=8), sandbox.root / "w.safetensors")
    argv, words = FILE_OUTS[name]
    refused(sandbox.run(argv), words)


def test_export_force_through_a_symlink_replaces_the_link_not_its_target(sandbox):
    link = sandbox.root / "m.onnx"
    link.symlink_to(sandbox.root / "precious.txt")
    result = sandbox.run(["export", "--model", "mlp", "--input-shape", "1,1,8,8", "--out", link, "--force"], out=link)
    assert result.code == 0, result.err
    assert not link.is_symlink() and (sandbox.root / "precious.txt").read_text() == "keep me\n"


def test_out_with_dotdot_writes_only_where_it_resolves(sandbox):
    """'thesis/../fresh' is the sandbox's fresh/: the run lands there, the thesis folder is untouched."""
    recipe = sandbox.recipe(TINY)
    out = sandbox.root / "thesis" / ".." / "fresh"
    result = sandbox.run(["compress", recipe, "--out", out, "--no-progress"], out=sandbox.root / "fresh")
    assert result.code == 0, result.err
    assert yaml.safe_load((sandbox.root / "fresh" / "recipe.yaml").read_text()) == TINY
