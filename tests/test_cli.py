"""The `interp` command: subcommands that mirror the API, tables on stdout, figures through
export, one-line errors with exit status 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interp import cli

TEXT = "def add(a, b):\n    return a + b\n"
SUBCOMMANDS = ["report", "decompose", "attribute", "lens", "norms", "neurons", "heads", "probe"]


@pytest.fixture
def run(default_model, monkeypatch, capsys):
    """Run ``interp ARGS`` in-process on the (session-loaded) default model."""
    loaded: list = []

    def fake_load(name=None, **kw):
        loaded.append(name)
        return default_model

    monkeypatch.setattr(sys.modules["interp.load"], "load", fake_load)

    def go(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    go.loaded = loaded
    return go


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_explains_its_options(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--model" in out
    if name != "report":
        assert "--format" in out and "--table" in out and "--rows" in out
    else:
        assert "--tokens" in out and "--data" in out and "self-contained" in out


def test_decompose_prints_a_readable_table(run):
    code, out, err = run("decompose", TEXT, "--by", "head", "--rows", "7")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["component", "kind", "layer"]
    assert len(lines) == 1 + 7 + 1 and lines[-1].startswith("... ")  # header, 7 rows, "more rows" note
    assert "L0H0" in out and "Traceback" not in err
    assert run.loaded == [None]  # no --model: the default model


def test_csv_and_json_write_the_whole_table(run, default_model):
    code, out, _ = run("decompose", TEXT, "--by", "layer", "--format", "csv")
    assert code == 0
    df = pd.read_csv(io.StringIO(out))
    n_pos = default_model.to_tokens(TEXT).tokens.shape[1]
    # per position: embed, then attn and mlp per layer (rotary model: no pos_embed)
    assert len(df) == n_pos * (1 + 2 * default_model.cfg.n_layers)
    assert {"component", "pos", "norm"} <= set(df.columns)
    code, out, _ = run("lens", TEXT, "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == n_pos * (default_model.cfg.n_layers + 1)
    assert isinstance(rows[0]["top_tokens"], list) and len(rows[0]["top_tokens"]) == 5


def test_table_and_figure_files(run, tmp_path):
    table, fig = tmp_path / "neurons.csv", tmp_path / "neurons.html"
    code, out, err = run("neurons", "--rows", "3", "--table", str(table), "--out", str(fig))
    assert code == 0, err
    df = pd.read_csv(table)
    assert len(df) >= 3 and {"layer", "neuron", "cosine"} <= set(df.columns)
    assert df["cosine"].is_monotonic_increasing  # most negative first
    assert fig.exists() and "Plotly.newPlot" in fig.read_text()
    assert f"wrote {fig}" in err
    code, _, err = run("heads", "--table", str(tmp_path / "heads.json"))
    assert code == 0, err
    heads = pd.read_json(tmp_path / "heads.json")
    assert {"layer", "head", "score"} <= set(heads.columns)


def test_model_option_is_passed_to_load(run):
    code, _, _ = run("norms", "x = 1", "--model", "some/dir", "--rows", "2")
    assert code == 0
    assert run.loaded == ["some/dir"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["neurons", "--layers", "9"], r"layers=\[9\] out of range for a model with 2 layers"),
        (["decompose", "x", "--rows", "0"], r"--rows 0 must be at least 1"),
        (["decompose", "x", "--table", "t.xlsx"], r"--table 't.xlsx': use a \.csv, \.json or \.parquet file"),
        (["decompose", "x", "--out", "f.jpg"], r"--out 'f.jpg': use one of \.html"),
        (["attribute", "x = 1", "--target", "zzqqxxyy"], r"target"),
        (["probe", "--label", "nonsense"], r"label='nonsense' is not a built-in labeler"),
    ],
)
def test_errors_are_one_line_with_status_2(run, args, message):
    code, out, err = run(*args)
    assert code == 2
    assert err.startswith("interp: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""
    import re

    assert re.search(message, err), err


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["decompose", "x", "--by", "sideways"])
    assert info.value.code == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_console_script_missing_model(tmp_path):
    exe = Path(sys.executable).with_name("interp")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "interp.cli"]
    run = subprocess.run(cmd + ["heads", "--model", str(tmp_path / "no-model")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("interp: error: name_or_path=")
    assert "Traceback" not in run.stderr


def test_probe_reports_accuracy_per_layer(run, default_model):
    code, out, err = run("probe", "--label", "current_token", "--tokens", "4096", "--format", "csv", "-q")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert df["layer"].tolist() == list(range(default_model.cfg.n_layers + 1))
    assert {"accuracy", "control_accuracy", "selectivity"} <= set(df.columns)
    assert df["accuracy"].iloc[0] > 0.9  # the current token decodes from the embedding


def test_static_figure_without_browser_fails_before_the_analysis(run, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-browser"))
    code, out, err = run("heads", "--out", str(tmp_path / "heads.png"))
    assert code == 2 and out == ""  # nothing computed or printed
    assert err.startswith("interp: error: BROWSER_PATH=") and "apt-get install chromium" in err
    assert run.loaded == []
