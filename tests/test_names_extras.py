"""Safe names and optional-dependency errors."""

from __future__ import annotations

import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.extras import require
from perturbscore.names import check_name, is_safe_name


@pytest.mark.parametrize("name", ["stab", "top_2", "A-1", "x" * 64])
def test_safe_names(name: str) -> None:
    assert is_safe_name(name) and check_name(name, "group name") == name


@pytest.mark.parametrize("name", ["", "../escaped", "a/b", ".hidden", "v1.1", "-x", "x" * 65, 3])
def test_unsafe_names(name: object) -> None:
    with pytest.raises(PerturbscoreError, match="group name"):
        check_name(name, "group name", "run.toml")


def test_missing_extra_names_the_install_line() -> None:
    with pytest.raises(PerturbscoreError, match=r"pip install 'perturbscore\[dask\]'"):
        require("dask_does_not_exist_xyz", "--engine dask", extra="dask")
    assert require("json", "test").dumps([]) == "[]"
