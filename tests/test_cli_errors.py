"""Bad input ends a command with one line and exit 2; any other exception is a bug and shows as one."""
from __future__ import annotations

import pytest
import typer

from lamp_bench.harness.cli import user_errors
from lamp_bench.harness.config import ConfigError, parse_ids
from lamp_bench.results.errors import ResultsInputError


def raising(error: Exception):
    @user_errors
    def command():
        raise error

    return command


@pytest.mark.parametrize("error", [ConfigError("bad --tasks"), ResultsInputError("no records"),
                                   FileNotFoundError("no such file")])
def test_user_errors_exit_2_with_one_line(error, capsys):
    with pytest.raises(typer.Exit) as exit_info:
        raising(error)()
    assert exit_info.value.exit_code == 2
    assert str(error) in capsys.readouterr().err


def test_an_internal_value_error_is_not_passed_off_as_bad_input(capsys):
    with pytest.raises(ValueError, match="'yerr' must not contain negative values"):
        raising(ValueError("'yerr' must not contain negative values"))()
    assert "internal error" in capsys.readouterr().err


def test_one_range_parser():
    assert parse_ids("0-2,5") == [0, 1, 2, 5]
    assert parse_ids("all") is None and parse_ids(None) is None
    for bad in ("5-3", "0,x", "-1"):
        with pytest.raises(ConfigError, match="--tasks"):
            parse_ids(bad)
