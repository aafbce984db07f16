"""`rootfree verdict FILE.csv` (service/cli/verdict.py): results from anywhere, no server."""

import json

import pytest

from service.cli import main
from service.results.verdicts import compare_runs

CSV = """optimizer,seed,value
sgd,1,0.31
sgd,2,0.33
sgd,3,0.30
sgd,4,0.32
adamw,4,0.24
adamw,2,0.27
adamw,1,0.25
adamw,3,0.26
"""


def test_verdict_prints_the_table_and_json(tmp_path, capsys):
    f = tmp_path / "runs.csv"
    f.write_text(CSV)
    assert main(["verdict", str(f)]) == 0
    out = capsys.readouterr().out
    assert "adamw better than sgd" in out and "p (Holm)" in out
    assert main(["verdict", str(f), "--json", "--mode", "max"]) == 0
    (c,) = json.loads(capsys.readouterr().out)
    assert c == pytest.approx(compare_runs({"sgd": [0.31, 0.33, 0.30, 0.32], "adamw": [0.24, 0.27, 0.25, 0.26]},
                                           mode="max")[0])
    assert c["verdict"] == "sgd better than adamw"
    # paired: matched by seed, not by line order
    assert main(["verdict", str(f), "--json", "--paired"]) == 0
    (p,) = json.loads(capsys.readouterr().out)
    assert p == pytest.approx(compare_runs({"sgd": [0.31, 0.33, 0.30, 0.32], "adamw": [0.25, 0.27, 0.26, 0.24]},
                                           paired=True)[0])


@pytest.mark.parametrize("text, message", [
    ("a,b\nsgd,1,0.3\n", "header"),
    ("optimizer,seed,value\nsgd,1,abc\nadamw,1,0.2\n", "line 2: value 'abc'"),
    ("optimizer,seed,value\nsgd,1,0.3,9\n", "line 2: expected 3 columns"),
    ("optimizer,seed,value\nsgd,1,0.3\nsgd,1,0.4\nadamw,1,0.2\n", "seed '1' twice"),
    ("optimizer,seed,value\nsgd,1,0.3\n", "at least two optimizers"),
    ("optimizer,seed,value\nsgd,1,nan\nadamw,1,0.2\n", "not finite"),
])
def test_verdict_says_what_is_wrong_with_a_file(tmp_path, capsys, text, message):
    f = tmp_path / "runs.csv"
    f.write_text(text)
    assert main(["verdict", str(f)]) == 2
    assert message in capsys.readouterr().err


def test_verdict_on_a_missing_file(tmp_path, capsys):
    assert main(["verdict", str(tmp_path / "none.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("data, args, message", [
    (b"optimizer,seed,value\n\xff\xfe,1,0.3\nadamw,1,0.2\n", [], "not UTF-8"),
    (b"optimizer,seed,value\nsgd,1,0.3\nadamw,2,0.2\n", ["--paired"], "no seed that every optimizer has"),
    ("optimizer,seed,value\nsgd\u202e,1,0.3\nadamw,1,0.2\n".encode(), [], "line 2: optimizer"),
    (b"optimizer,seed,value\nsgd\x1b[2J,1,0.3\nadamw,1,0.2\n", [], "line 2: optimizer"),
])
def test_verdict_refuses_what_it_cannot_show_or_pair_with_exit_2(tmp_path, capsys, data, args, message):
    """Not UTF-8 (was a traceback), paired runs with no seed in common (was an empty table and exit
    0), and an optimizer name with control or Unicode format characters (a bidi override or an
    escape sequence would print as another name, or drive the terminal)."""
    f = tmp_path / "runs.csv"
    f.write_bytes(data)
    assert main(["verdict", str(f), *args]) == 2
    assert message in capsys.readouterr().err
