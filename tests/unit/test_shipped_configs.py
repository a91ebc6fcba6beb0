"""`simsid-config` names the shipped configs (the wheel ships configs/ as anomalib_simsid/configs)."""

from __future__ import annotations

import pytest
import tomllib
import yaml

from anomalib_simsid.shipped_configs import main, shipped_config
from tests.helpers import REPO


def test_every_config_of_the_checkout_is_named_and_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    listed = capsys.readouterr().out.split()
    assert sorted(p.split("/")[-1] for p in listed) == sorted(
        p.name for p in (REPO / "configs").glob("*.yaml")
    )
    assert shipped_config("zhanglab") == shipped_config("zhanglab.yaml")
    assert (
        "class_path"
        in yaml.safe_load(shipped_config("benchmark").read_text())["benchmark"]["model"]["grid"][0]
    )
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["configs"] == "anomalib_simsid/configs"  # where config_dir() looks first


def test_unknown_name_lists_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zhanglb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no shipped config 'zhanglb'" in err
    assert "zhanglab" in err
