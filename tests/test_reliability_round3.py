"""Hostile inputs, round three: records that are saved atomically and checked whole on load,
short prompts that are used, keywords that are named, special-token strings that stay text,
sizes refused before allocating, degenerate weights, and the command line."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

import interp
from interp.stats import TopExamples

TEXTS = ["def add(a, b):\n    return a + b\n" * 3, "class A:\n    x = 1\n" * 4]


@pytest.fixture(scope="module")
def record(default_model):
    return default_model.run_with_writes(["x = 1\nprint(x)\n", "def f():\n    return 2\n"])


# ---- records: atomic saves, parts that must agree ------------------------------------------
def _two_records(default_model, record, tmp_path):
    other = default_model.run_with_writes(["y = 2\n", "z = 3\n"])
    path = tmp_path / "rec"
    record.save(path)
    return path, other


def test_an_interrupted_overwrite_never_loads_mixed(default_model, record, tmp_path, monkeypatch):
    import interp.records as records

    path, other = _two_records(default_model, record, tmp_path)
    real = records.os.replace
    for renames_before_interrupt in (0, 1):
        record.save(path)
        calls = []

        def interrupted(src, dst, calls=calls, n=renames_before_interrupt):
            if len(calls) == n:
                raise KeyboardInterrupt
            calls.append(dst)
            return real(src, dst)

        monkeypatch.setattr(records.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            other.save(path)
        monkeypatch.setattr(records.os, "replace", real)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary files left
        if renames_before_interrupt == 0:  # nothing renamed: the old record, whole
            back = interp.ResidualWrites.load(path)
            assert torch.equal(back.tokens, record.tokens)
        else:  # one file of each: refused, never mixed
            with pytest.raises(ValueError, match="come from two different saves"):
                interp.ResidualWrites.load(path)
    other.save(path)
    assert torch.equal(interp.ResidualWrites.load(path).tokens, other.tokens)


def test_files_of_two_records_are_refused(default_model, record, tmp_path):
    path, other = _two_records(default_model, record, tmp_path)
    other.save(tmp_path / "other")
    (tmp_path / "rec.json").write_bytes((tmp_path / "other.json").read_bytes())
    with pytest.raises(ValueError, match="come from two different saves"):
        interp.ResidualWrites.load(path)


def _rewrite(path, edit):
    """Rewrite the tensors file with ``edit`` applied, keeping its header's save id."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    t = load_file(str(path))
    edit(t)
    save_file({k: v.contiguous() for k, v in t.items()}, str(path), metadata=header)


@pytest.mark.parametrize("what, edit", [
    ("edited tokens", lambda t: t["tokens"].__setitem__((0, 1), 7)),
    ("changed dtype", lambda t: t.update({k: v.double() for k, v in t.items() if k.startswith(("z.", "acts."))})),
    ("NaN", lambda t: t["acts.0"].__setitem__((0, 0, 0), float("nan"))),
])
def test_a_record_edited_after_saving_is_refused(record, tmp_path, what, edit):
    path = record.save(tmp_path / "rec")
    _rewrite(path, edit)
    with pytest.raises(ValueError, match="was changed after it was saved"):
        interp.ResidualWrites.load(path)


@pytest.mark.parametrize("what, edit, match", [
    ("NaN", lambda t: t["acts.0"].__setitem__((0, 0, 0), float("nan")), "'acts.0' holds NaN or inf"),
    ("inf", lambda t: t["embed"].__setitem__((0, 0, 0), float("inf")), "'embed' holds NaN or inf"),
    ("mixed dtypes", lambda t: t.update({"z.0": t["z.0"].double()}), "have dtypes .*one float dtype"),
    ("token outside the vocabulary", lambda t: t["tokens"].__setitem__((0, 1), 10**6), "ids outside the vocabulary"),
])
def test_an_unhashed_record_is_still_checked_whole(record, tmp_path, what, edit, match):
    """A record without the consistency fields (an older interp's) is checked for what the
    data itself shows: NaN/inf, one dtype, token ids in the vocabulary."""
    path = record.save(tmp_path / "rec")
    t = load_file(str(path))
    edit(t)
    save_file({k: v.contiguous() for k, v in t.items()}, str(path))  # no save id
    meta = json.loads(path.with_suffix(".json").read_text())
    meta.pop("record")
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        interp.ResidualWrites.load(path)


def test_an_edited_sidecar_is_refused(record, tmp_path):
    path = record.save(tmp_path / "rec")
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["str_tokens"][0][1] = "edited"
    side.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="rec.json was changed after it was saved"):
        interp.ResidualWrites.load(path)


def test_a_record_with_nan_is_not_saved(record, tmp_path):
    bad = interp.ResidualWrites(**{**record.__dict__, "embed": record.embed.clone().fill_(float("nan"))})
    with pytest.raises(ValueError, match="'embed' holds NaN or inf"):
        bad.save(tmp_path / "nan")
    assert not list(tmp_path.iterdir())


def test_examples_and_probes_are_records_of_their_own(default_model, tmp_path):
    stats = interp.neuron_stats(default_model, TEXTS, progress=False, top_k=3)
    ex = TopExamples.from_attr(stats.attrs["examples"])
    path = ex.save(tmp_path / "examples")
    back = TopExamples.load(path)
    assert back.frame(["L1N5", "L0N2"]).equals(interp.top_examples(stats, ["L1N5", "L0N2"]))
    assert interp.top_examples(back, ["L1N5"]).equals(interp.top_examples(stats, ["L1N5"]))
    probe_df = interp.probe_layers(default_model, TEXTS, max_tokens=300, progress=False, layers=[0, 1])
    probe = interp.LinearProbe.from_frame(probe_df)
    p = probe.save(tmp_path / "probe")
    again = interp.LinearProbe.load(p)
    X = torch.randn(probe.coef_.shape[0], 5, default_model.cfg.d_model)
    assert torch.equal(again.predict(X), probe.predict(X)) and again.sites_ == probe.sites_
    with pytest.raises(ValueError, match="holds a 'TopExamples' record, not a 'LinearProbe' record"):
        interp.LinearProbe.load(path)
    t = load_file(str(p))
    t["coef_"][0, 0, 0] = float("nan")
    save_file(t, str(p), metadata={"interp.kind": "LinearProbe", "interp.meta": json.dumps(probe._parts()[1])})
    with pytest.raises(ValueError, match="'coef_' holds NaN or inf"):
        interp.LinearProbe.load(p)
    with pytest.raises(ValueError, match="is a directory"):
        ex.save(tmp_path)


# ---- short prompts, named keywords, special tokens -----------------------------------------
def _ioi(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = ["Mary", "John", "Anna", "Tom", "Kate", "Bob"]
    out = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        out.append(f"{a}, {b}: {b} to")
    return out


def test_a_thousand_short_prompts_are_all_used(default_model):
    prompts = _ioi(1000)
    lengths = [len(default_model.to_tokens(p).tokens[0]) for p in prompts]
    assert 12 <= min(lengths) and max(lengths) <= 18  # ~15 tokens each, BOS included
    rows = tokens = 0
    for w in default_model.stream_writes(prompts, batch_size=100, progress=False):
        assert w.shape[1] == int(w.mask.sum(1).max())  # batches as wide as their longest prompt
        rows, tokens = rows + w.shape[0], tokens + int(w.mask.sum())
    assert rows == 1000 and tokens == sum(lengths)
    stats = interp.neuron_stats(default_model, prompts, max_tokens=None, progress=False, batch_size=100)
    assert stats.attrs["n_tokens"] == sum(lengths) - 1000  # every position but each row's BOS
    ev = interp.deletion_evidence(default_model, prompts[:200], neurons=["L1N3"], heads=[], progress=False)
    assert len(ev)


@pytest.mark.parametrize("call, name", [
    (lambda m: m.stream_writes(TEXTS, min_tokens=2), "min_tokens"),
    (lambda m: m.logits("x = 1", layer=0), "layer"),
    (lambda m: m.to_str_tokens("x = 1", chunks=True), "chunks"),
    (lambda m: interp.pattern_frame(m, "x = 1", layer=0), "layer"),
    (lambda m: interp.attention_patterns(m, "x = 1", head=0), "head"),
    (lambda m: interp.stats.shard_records(m, TEXTS, min_tokens=2), "min_tokens"),
])
def test_an_unknown_keyword_is_refused_by_name(default_model, call, name):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        call(default_model)


def test_special_token_strings_in_text_stay_text(default_model):
    m = default_model
    eot = m.tokenizer.decode([m.bos_id])
    assert eot == "<|endoftext|>"
    text = f"x = 1{eot}y = 2"
    split = m.to_tokens(text).tokens[0]
    assert (split[1:] != m.bos_id).all() and m.tokenizer.decode(split[1:]) == text
    special = m.to_tokens(text, split_special_tokens=False).tokens[0]
    assert (special[1:] == m.bos_id).sum() == 1
    w = m.run_with_writes(text)
    assert torch.equal(w.tokens[0], split)
    (s,) = m.stream_writes([text], progress=False)
    assert torch.equal(s.tokens[0], split)
    try:
        m.split_special_tokens = False  # the caller opts in for every function of this model
        assert torch.equal(m.to_tokens(text).tokens[0], special)
        (s,) = m.stream_writes([text], progress=False)
        assert torch.equal(s.tokens[0], special)
    finally:
        m.split_special_tokens = True
    with pytest.raises(TypeError, match="split_special_tokens='no' must be True or False"):
        m.to_tokens(text, split_special_tokens="no")


# ---- sizes, threads, files that are not files -----------------------------------------------
def test_sizes_the_machine_cannot_hold_are_refused_first(default_model):
    with pytest.raises(MemoryError, match=r"top_k=10,000,000 examples of 1,024 neurons .* would need [\d,.]+ GiB of "
                                          r"memory, and [\d,.]+ GiB is available; pass a smaller top_k"):
        interp.neuron_stats(default_model, TEXTS, top_k=10**7, progress=False)
    with pytest.raises(ValueError, match=r"context=5,000,000 is wider than a row: rows hold 256 tokens .* pass "
                                         r"context <= 255"):
        interp.neuron_stats(default_model, TEXTS, context=5 * 10**6, progress=False)
    with pytest.raises(ValueError, match=r"context=64 is wider than a row: rows hold 32 tokens"):
        interp.neuron_stats(default_model, TEXTS, context=64, n_ctx=32, progress=False)


@pytest.mark.parametrize("value, match", [
    ("100000000", r"asks for more threads than this machine can use: it has \d+ CPU\(s\)"),
    ("-3", "must be a positive int"),
    ("two", "must be a positive int"),
])
def test_an_absurd_thread_count_is_refused(default_model, monkeypatch, value, match):
    monkeypatch.setenv("INTERP_NUM_THREADS", value)
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match=r"\$INTERP_NUM_THREADS=.*" + match):
        interp.find_deleting_neurons(default_model)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_fifo_in_a_checkpoint_is_refused_before_opening(tmp_path, name):
    import os
    import shutil

    from interp.models import DEFAULT_MODEL_DIR

    ckpt = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_MODEL_DIR, ckpt)
    (ckpt / name).unlink()
    os.mkfifo(ckpt / name)
    with pytest.raises(ValueError, match=f"{name} is a FIFO \\(named pipe\\), not a regular file"):
        interp.load(ckpt)


def test_a_fifo_gguf_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "model.gguf")
    for path in (tmp_path / "model.gguf", tmp_path):
        with pytest.raises(ValueError, match="is not a regular file"):
            interp.load(path)


# ---- the command line ------------------------------------------------------------------------
@pytest.fixture
def cli_run(default_model, monkeypatch, capsys):
    """``interp ARGS`` in-process on the session's default model; ``loads`` counts model loads."""
    import sys

    from interp import cli

    loads: list = []

    def fake_load(name=None, **kw):
        loads.append(name)
        return default_model

    monkeypatch.setattr(sys.modules["interp.load"], "load", fake_load)

    def go(*args):
        code = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    go.loads = loads
    return go


@pytest.mark.parametrize("args", [
    ["stats", "--data", "FILE", "--tokens", "400", "-q"],
    ["probe", "--data", "FILE", "--tokens", "400", "-q"],
    ["neurons"],
])
def test_cli_tables_save_as_parquet(cli_run, tmp_path, args):
    import pandas as pd

    data = tmp_path / "corpus"
    data.mkdir()
    for i, text in enumerate(TEXTS * 3):
        (data / f"{i}.py").write_text(text)
    table = tmp_path / "t.parquet"
    code, out, err = cli_run(*[str(data) if a == "FILE" else a for a in args], "--table", table)
    assert code == 0, err
    back = pd.read_parquet(table)
    assert len(back) and json.loads(json.dumps(back.attrs)) == back.attrs  # plain values
    if args[0] == "stats":  # the examples travel in the parquet file
        assert interp.top_examples(back, ["L1N5"])["rank"].tolist() == list(range(1, 21))


@pytest.mark.parametrize("args, message", [
    (["decompose", "x", "--format", "csv", "--rows", "5"], r"--rows takes effect only with --format table"),
    (["stats", "--neurons", "L1N5"], r"--neurons picks the neurons that --examples FILE writes and --out FILE draws"),
    (["decompose", "x", "--table", "DIR/t.csv"], r"--table '.*t.csv' is a directory; pass a file path inside it"),
    (["decompose", "x", "--out", "DIR/no/such/f.html"], r"--out '.*': the directory '.*no/such' does not exist"),
    (["stats", "--examples", "DIR"], r"--examples '.*': use a \.csv, \.json or \.parquet file"),
    (["stats", "--examples", "DIR/x/e.csv"], r"--examples '.*': the directory '.*x' does not exist"),
    (["report", "--out", "DIR/r.html"], r"--out '.*r.html' is a directory"),
    (["neurons", "--out", "DIR/r.html/x/f.html"], r"--out '.*f.html': the directory '.*r.html/x' does not exist"),
])
def test_cli_refuses_before_loading_anything(cli_run, tmp_path, args, message):
    import re

    for name in ("t.csv", "r.html"):  # directories with a file's name
        (tmp_path / name).mkdir()
    code, out, err = cli_run(*[a.replace("DIR", str(tmp_path)) for a in args])
    assert code == 2 and re.search(message, err), err
    assert cli_run.loads == [] and sorted(p.name for p in tmp_path.rglob("*")) == ["r.html", "t.csv"]


@pytest.mark.parametrize("args, message", [
    (["stats", "--neurons", "L9N1", "--examples", "E"], r"neurons=\['L9N1'\].*out of range|L9N1"),
    (["stats", "--neurons", "L1N5", "--layers", "0", "--examples", "E"], r"--neurons names layer\(s\) \[1\], which --layers"),
])
def test_cli_checks_neurons_before_reading_the_corpus(cli_run, tmp_path, monkeypatch, args, message):
    import re

    import interp.stats.neurons as neurons

    monkeypatch.setattr(neurons, "shard_records", lambda *a, **k: pytest.fail("the corpus was read"))
    code, out, err = cli_run(*[str(tmp_path / "e.csv") if a == "E" else a for a in args])
    assert code == 2 and re.search(message, err), err


def test_cli_reports_a_size_it_cannot_hold_in_one_line(cli_run):
    code, out, err = cli_run("stats", "--top-k", "100000000", "--tokens", "100")
    assert code == 2 and err.startswith("interp: error: top_k=100,000,000 examples") and err.count("\n") == 1


def test_cli_timeout_alone_warns(cli_run, monkeypatch, caplog):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, out, err = cli_run("stats", "--data", "stdlib:val", "--tokens", "200", "--timeout", "30", "--rows", "1")
    assert code == 0 and "--timeout applies under torchrun / accelerate launch only" in caplog.text + err


# ---- numerically degenerate but legal weights ----------------------------------------------
def _surgery(kind: str):
    """A seeded random GPT-2 with its weights made degenerate by surgery (or d_model=1)."""
    from interp.testing import random_hf_model, tiny_tokenizer

    if kind == "d_model=1":
        hf = random_hf_model("gpt2", d_model=1, n_heads=1, d_mlp=4)
    else:
        hf = random_hf_model("gpt2")
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if kind == "constant":
                    p.fill_(1.0 if ".ln" in name or name.startswith("transformer.ln_f") else 0.5)
                elif kind == "underflow" and "ln" not in name and "wte" not in name and "wpe" not in name:
                    p.mul_(1e-30)  # every block's matrices near float32's smallest normal squares
    return interp.load(hf, tokenizer=tiny_tokenizer(300), device="cpu")


@pytest.fixture(scope="module", params=["constant", "underflow", "d_model=1"])
def degenerate(request):
    return request.param, _surgery(request.param)


UNDEFINED = {  # analysis -> the kinds for which its answer does not exist, and the reason it gives
    "find_deleting_neurons": ({"constant": "vector is zero", "d_model=1": "at least 2 directions"},
                              lambda m: interp.find_deleting_neurons(m)),
    "neuron_in_out_cosines": ({"constant": "vector is zero", "d_model=1": "at least 2 directions"},
                              lambda m: interp.neuron_in_out_cosines(m)),
    "composition_scores": ({"constant": "matrices are zero", "d_model=1": "matrices are zero"},
                           lambda m: interp.composition_scores(m)),
    "decompose": ({"constant": "stream is exactly zero", "d_model=1": "stream is exactly zero"},
                  lambda m: interp.decompose(m.run_with_writes("x = 1\n"), by="head")),
    "deletion_effect": ({"constant": "direction the deleter erases is zero", "d_model=1": "erases is zero"},
                        lambda m: interp.deletion_effect(m, "L1N3", TEXTS, progress=False)),
    "attention_sinks": ({"constant": "stream is exactly zero", "d_model=1": "stream is exactly zero"},
                        lambda m: interp.attention_sinks(m, TEXTS, max_tokens=200)),
    "prediction_neurons": ({"constant": "same for every token", "d_model=1": "same for every token"},
                           lambda m: interp.prediction_neurons(m, n_null=16)),
    "entropy_neurons": ({"d_model=1": "at least 2 usable directions"},
                        lambda m: interp.entropy_neurons(m, TEXTS, max_tokens=200)),
}


@pytest.mark.parametrize("name", list(UNDEFINED))
def test_degenerate_weights_give_an_answer_or_say_why_not(degenerate, name):
    import warnings

    kind, model = degenerate
    reasons, call = UNDEFINED[name]
    if kind in reasons:
        with pytest.raises(ValueError, match=reasons[kind]):
            call(model)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning, no flood of flags
        df = call(model)
    key = {"decompose": "frac", "deletion_effect": "change", "composition_scores": "score", "attention_sinks": "norm",
           "prediction_neurons": "vocab_skew", "entropy_neurons": "null_norm"}.get(name, "cosine")
    rows = df[df["role"] == "deleter"] if name == "deletion_effect" else df
    assert (len(rows) or name == "find_deleting_neurons") and rows[key].notna().all()  # flagged rows only there
    if "flagged" in df and len(df):
        assert df["flagged"].mean() < 0.05  # weights scaled by 1e-30 are still random weights: no deleters


@pytest.mark.numerics
def test_underflowed_weights_keep_their_cosines():
    """A cosine does not depend on scale: 1e-30 x the weights gives the same cosines."""
    from interp.testing import random_hf_model, tiny_tokenizer

    plain = interp.neuron_in_out_cosines(interp.load(random_hf_model("gpt2"), tokenizer=tiny_tokenizer(300)))
    tiny = interp.neuron_in_out_cosines(_surgery("underflow"))
    a = plain.set_index("label")["cosine"]
    b = tiny.set_index("label")["cosine"].reindex(a.index)
    # Both in float32 from vectors of d_model = 64 entries that differ by one rounding each (eps):
    # the dot product and the two norms each err by at most ~d * eps relative (worst-case
    # accumulation), and |cosine| <= 1, so |difference| <= (3 d + 2) eps; 4 d eps bounds it.
    assert (a - b).abs().max() <= 4 * 64 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("fn", [interp.activation_patching, interp.attribution_patching])
def test_a_metric_that_returns_nan_is_refused(default_model, fn):
    with pytest.raises(ValueError, match=r"metric returned \[nan\] .* the logits are finite, so the metric itself"):
        fn(default_model, "x = 1", "y = 1", metric=lambda logits: logits[:, -1, 0] * float("nan"))
    with pytest.raises(ValueError, match=r"metric returned \[-inf\]"):
        fn(default_model, "x = 1", "y = 1", metric=lambda logits: (logits[:, -1, 0] * 0).log())


def test_a_fifo_record_is_refused(record, tmp_path):
    import os

    path = record.save(tmp_path / "rec")
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ValueError, match="is not a regular file"):
        interp.ResidualWrites.load(path)
    os.mkfifo(tmp_path / "ex.safetensors")
    with pytest.raises(ValueError, match="is not a regular file"):
        TopExamples.load(tmp_path / "ex")


def test_a_random_subspace_too_large_for_the_machine_is_refused():
    with pytest.raises(MemoryError, match=r"Subspace.random\(d_model=10,000,000, k=1,000\) would need [\d,.]+ GiB"):
        interp.Subspace.random(10**7, 10**3)


def test_a_batch_the_machine_cannot_hold_is_refused_before_the_forward(default_model, monkeypatch):
    import interp._checks as checks

    monkeypatch.setattr(checks, "available_memory", lambda: 64 << 20)  # a machine with 64 MiB free
    with pytest.raises(MemoryError, match=r"recording a batch of 2,000 rows x \d+ tokens would need [\d,.]+ GiB"):
        default_model.run_with_writes(["x = 1\nprint(x)\n" * 8] * 2000)
    with pytest.raises(MemoryError, match=r"pass fewer rows at a time \(a smaller batch_size"):
        next(default_model.stream_writes(TEXTS * 500, batch_size=1000, progress=False))
    assert default_model.run_with_writes("x = 1").shape == (1, 4)  # small batches still run


def test_report_threads_are_bounded_like_the_variable(tmp_path):
    from interp.report import build_report

    with pytest.raises(ValueError, match=r"threads=100000000 asks for more threads than this machine can use"):
        build_report(out=tmp_path / "r.html", threads=10**8)
    assert not list(tmp_path.iterdir())
