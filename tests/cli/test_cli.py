"""The command line: one-line errors with a non-zero exit for every user mistake, and useful help."""

import pytest

from segedge.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "--model", "bisnet"], "segedge: error: unknown model 'bisnet'. Did you mean 'bisenet'? Valid models: "),
        (["export", "--model", "unet", "--untrained", "--input-size", "250x512"], "height 250 is not a multiple of 16 (nearest valid: 240 or 256)"),
        (["export", "--model", "unet", "--untrained", "--calib-images", "4"], "--calib-images, --calib-method, --calib-select, --activation, --int8-scheme, --max-drop, --max-search-steps, --search-order, --equalize, --quantize-classifier and --op-set only apply with --int8"),
        (["export", "--model", "unet", "--untrained", "--int8", "--calib-images", "1000"], "calibration set has 512 images but 1000 were asked for"),
        (["export", "--model", "unet", "--checkpoint", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["train", "--model", "unet", "--batch-size", "1"], "batch-size must be >= 2 for unet"),
    ],
)
def test_user_mistakes_are_one_line_errors(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "export").exists()


def test_corrupt_checkpoint_is_a_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    code, _, err = run(capsys, "export", "--model", "unet", "--checkpoint", str(bad), "--out", str(tmp_path / "store"))
    assert code == 1
    assert "is unreadable or corrupt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("size", ["512", "axb", "0x64"])
def test_malformed_size_is_an_argparse_error(capsys, size):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "unet", "--input-size", size])
    assert exit_info.value.code == 2
    assert "--input-size" in capsys.readouterr().err


def test_export_help_names_every_stage_option(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--checkpoint", "--input-size", "--dynamic", "--fp16", "--int8", "--calib-images", "--calib-method", "--out"):
        assert option in out


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "bisenet" in out and "unet" in out


def test_export_prints_the_parity_table(capsys, tiny_checkpoint, tmp_path):
    code, out, err = run(capsys, "export", "--model", "unet", "--checkpoint", str(tiny_checkpoint.path), "--input-size", "64x128",
                         "--fp16", "--eval-images", "2", "--out", str(tmp_path), "--quiet")
    assert code == 0, err
    assert "artifacts in" in out
    for stage in ("onnx", "sim", "fp16"):
        assert f"\n{stage} " in out
    assert "torch FP32 reference mIoU" in out


def older_store(path, runs=20):
    """A results store as an older segedge wrote it: fewer columns than today's."""
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("CREATE TABLE measurements (id INTEGER PRIMARY KEY, created TEXT, machine_id TEXT, machine TEXT, profile TEXT, "
               "backend TEXT, model TEXT, precision TEXT, height INTEGER, width INTEGER, batch INTEGER, status TEXT, "
               "median_ms REAL, runs INTEGER, miou REAL, miou_drop REAL)")
    db.execute("INSERT INTO measurements (created, machine_id, machine, profile, backend, model, precision, height, width, batch, "
               "status, median_ms, runs, miou, miou_drop) VALUES ('2024-01-01T00:00:00+00:00', 'm1', '{\"cpu\": \"X\"}', 'cpu', "
               "'onnxruntime', 'unet', 'int8', 64, 128, 1, 'ok', 5.0, ?, 0.5, 0.1)", (runs,))
    db.commit()
    db.close()
    return path


def test_report_reads_a_store_it_may_not_write_and_leaves_it_as_it_was(capsys, tmp_path, monkeypatch):
    """`report` used to refuse a read-only store, and to ALTER an older one to today's columns. A read writes nothing:
    as root a chmod stops nothing, so the permission check a user meets is played by os.access, and the bytes and
    modification time of the file are compared."""
    import os

    path = older_store(tmp_path / "r.sqlite")
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode, **kw))
    code, out, err = run(capsys, "report", "--results", str(path))
    assert code == 0, err
    assert "| cpu | onnxruntime | unet | int8 | 64x128 | 5.0 |" in out
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]


def _report_error(capsys, path):
    """`segedge report` on ``path``: the one-line error it printed; the file's bytes are checked unchanged."""
    before = path.read_bytes()
    code, out, err = run(capsys, "report", "--results", str(path))
    assert code == 1 and out == "", out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert path.read_bytes() == before
    return err


def _store_of(path, create, *inserts):
    import sqlite3

    db = sqlite3.connect(path)
    if create:
        db.execute(create)
    for insert in inserts:
        db.execute(insert)
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("size", [100, 1000, 5000, 6000])
def test_report_on_a_store_cut_short_is_a_one_line_error(capsys, tmp_path, size):
    """A copy cut at 5000 bytes used to read back as rows of NULLs and end in `TypeError: sequence item 0`."""
    from segedge.core.results import ResultsStore

    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        for i in range(5):
            store.add(dict(machine_id="m1", profile="cpu", backend="onnxruntime", model=f"m{i}", precision="int8", height=64,
                           width=128, batch=1, status="ok", median_ms=5.0, miou=0.5, miou_drop=0.1, machine={"cpu": "X"}))
    with open(path, "r+b") as f:
        f.truncate(size)
    err = _report_error(capsys, path)
    assert f"results store {path}" in err
    if size == 5000:
        assert "is damaged" in err


def test_report_on_a_foreign_schema_says_what_is_missing(capsys, tmp_path):
    few = _store_of(tmp_path / "few.sqlite", "CREATE TABLE measurements (id INTEGER PRIMARY KEY, model TEXT, miou REAL)",
                    "INSERT INTO measurements (model, miou) VALUES ('unet', 0.5)")
    err = _report_error(capsys, few)
    assert f"results store {few} is not a segedge results store: its measurements table has no profile, precision" in err
    other = _store_of(tmp_path / "other.sqlite", "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    assert f"results store {other} is not a segedge results store: it has no measurements table (it holds photos)" in \
        _report_error(capsys, other)
    typed = _store_of(tmp_path / "typed.sqlite", "CREATE TABLE measurements (profile TEXT, model TEXT, precision TEXT, median_ms)",
                      "INSERT INTO measurements VALUES ('cpu', 'unet', 'int8', 'fast')")
    assert "column median_ms holds 'fast', not a number" in _report_error(capsys, typed)


def test_report_on_a_minimal_or_empty_store(capsys, tmp_path):
    minimal = _store_of(tmp_path / "min.sqlite", "CREATE TABLE measurements (profile TEXT, model TEXT, precision TEXT, median_ms REAL)",
                        "INSERT INTO measurements VALUES ('cpu', 'unet', 'int8', 5.0)")
    code, out, err = run(capsys, "report", "--results", str(minimal))
    assert code == 0, err
    assert "| cpu |  | unet | int8 |  | 5.0 |" in out  # no size stored: a blank cell, not NonexNone
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert "the results store holds no rows" in _report_error(capsys, empty)


def test_report_merge_of_a_store_with_an_unknown_column_is_a_one_line_error(capsys, tmp_path):
    """A store written by a newer segedge (a column this one does not know) used to end in a ValueError traceback."""
    import sqlite3

    mine, theirs = older_store(tmp_path / "mine.sqlite"), older_store(tmp_path / "theirs.sqlite")
    db = sqlite3.connect(theirs)
    db.execute("ALTER TABLE measurements ADD COLUMN from_the_future TEXT")
    db.execute("UPDATE measurements SET machine_id = 'jetson', from_the_future = 'x'")
    db.commit()
    db.close()
    before = theirs.read_bytes()
    code, out, err = run(capsys, "report", "--results", str(mine), "--merge", str(theirs))
    assert code == 1 and out == ""
    assert (f"cannot merge {theirs}: it has a column this segedge does not know (from_the_future); it was written by a "
            "newer segedge: upgrade this one to merge it") in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert theirs.read_bytes() == before
    assert sqlite3.connect(mine).execute("SELECT COUNT(*) FROM measurements").fetchone() == (1,)  # nothing half merged


def test_report_max_drop_without_budget_is_refused_before_any_output(capsys, tmp_path):
    """The table used to be printed first, then the error: a script piping stdout got a table and a failure."""
    path = older_store(tmp_path / "r.sqlite")
    code, out, err = run(capsys, "report", "--results", str(path), "--max-drop", "1")
    assert code == 1 and out == ""
    assert "--max-drop answers together with --budget-ms: give both" in err and len(err.strip().splitlines()) == 1
