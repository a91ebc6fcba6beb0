"""The fix registry: one entry per anomalib patch, triggered by the autoload hook, switchable off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import anomalib_simsid_autoload
from anomalib_simsid import fixes

# Which anomalib functions are wrapped, seen from a fresh interpreter that imports the plugin.
_PROBE = """
import json, anomalib_simsid
from anomalib.cli.cli import AnomalibCLI
from anomalib.engine import Engine
from anomalib.pipelines.benchmark.job import BenchmarkJob
from anomalib.pipelines.benchmark.pipeline import Benchmark
from anomalib_simsid import fixes
wrapped = {
    name: hasattr(getattr(Engine, name), "__wrapped__")
    for name in ("fit", "validate", "test", "train", "predict", "export")
}
wrapped["cli"] = hasattr(AnomalibCLI.before_instantiate_classes, "__wrapped__")
wrapped["benchmark"] = hasattr(BenchmarkJob.collect, "__wrapped__") and hasattr(Benchmark.run, "__wrapped__")
print(json.dumps({"wrapped": wrapped, "applied": sorted(fixes._APPLIED)}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALIB_SIMSID_")}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PROBE],
        env={**clean, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_registry_entries_are_documented_and_hooked() -> None:
    names = [fix.name for fix in fixes.FIXES]
    assert len(names) == len(set(names))
    for fix in fixes.FIXES:
        assert fix.bug, fix.name
        assert fix.effect, fix.name
        assert fix.fix, fix.name
        assert fix.target in anomalib_simsid_autoload.FIX_TARGETS
    assert set(anomalib_simsid_autoload.FIX_TARGETS) == set(fixes.TARGETS)
    assert all(callable(fix.apply) for fix in fixes.FIXES)  # functions, not import strings
    table = fixes.markdown_table()
    assert all(f"`{name}`" in table for name in names)


@pytest.mark.parametrize(
    ("env", "expected_applied"),
    [
        ({}, "all"),
        ({"ANOMALIB_SIMSID_NO_FIXES": "1"}, "none"),
        ({"ANOMALIB_SIMSID_NO_AUTOLOAD": "1"}, "none"),  # also after `import anomalib_simsid`
        ({"ANOMALIB_SIMSID_NO_FIXES": "resume_test,cli_seed"}, "some"),
    ],
)
def test_switches_turn_the_patches_off(env: dict[str, str], expected_applied: str) -> None:
    state = _probe(**env)
    everything = sorted(fix.name for fix in fixes.FIXES)
    if expected_applied == "all":
        assert state["applied"] == everything
        assert all(state["wrapped"].values())
    elif expected_applied == "none":
        assert state["applied"] == []
        assert not any(state["wrapped"].values()), state["wrapped"]
    else:
        assert state["applied"] == sorted(set(everything) - {"resume_test", "cli_seed"})


def test_user_errors_get_one_line_and_bugs_keep_their_traceback() -> None:
    from anomalib_simsid.fixes.cli import user_message
    from anomalib_simsid.models.simsid.adapters.checkpoint import NotSimSIDError

    assert user_message(NotSimSIDError("x.ckpt is not a SimSID checkpoint")) == (
        "NotSimSIDError: x.ckpt is not a SimSID checkpoint"
    )
    union = ValueError(
        "Does not validate against any of the Union subtypes\nSubtypes: [...]\nErrors:\n"
        "  - Expected a <class 'NoneType'>\n  - img_size must be a multiple of 32, got 100\n"
        "Given value type: <class 'Namespace'>\nGiven value: Namespace(class_path='anomalib_simsid.SimSID')"
    )
    assert user_message(union) == "anomalib_simsid.SimSID: img_size must be a multiple of 32, got 100"
    assert user_message(RuntimeError("a bug")) is None
    assert user_message(ValueError("a bug")) is None


def test_a_nonzero_ddp_rank_uses_rank_zeros_run_folder_and_touches_nothing(tmp_path, monkeypatch) -> None:
    import anomalib.engine.engine as module
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from anomalib_simsid.fixes import engine as run_folders

    root = tmp_path / "SimSID" / "DigitAnatomy"
    rank_zeros = run_folders.new_run_dir(root)  # rank 0 made its folder before it launched rank 1
    original = module.create_versioned_dir
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    seen = []

    def fit() -> str:  # an empty run: rank 0 would remove its folder; rank 1 must not race it
        seen.append(module.create_versioned_dir(root))
        return "fitted"

    assert run_folders._run_folders(fit, engine=None, arguments={}) == "fitted"
    assert seen == [rank_zeros]
    assert sorted(p.name for p in root.iterdir()) == ["latest", rank_zeros.name]
    assert module.create_versioned_dir is original
