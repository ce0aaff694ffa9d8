"""`python -m viewer score-cam --limit N`: N fields, so 0 or a negative count is refused at the
command line (a negative slice scored all but the last N fields, 0 scored none)."""

import pytest

from viewer.__main__ import main


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_one_is_one_line_error(limit, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["score-cam", "--run", str(tmp_path), "--data", str(tmp_path), "--limit", limit])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--limit" in err and "at least 1" in err, err
