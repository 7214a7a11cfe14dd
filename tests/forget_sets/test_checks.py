"""Checks on forget-set files and plans (issue 13): untrusted files, a forget set that leaves no
retain set, unsafe names, location-independent files, an unwritable forget_sets/ directory."""
import dataclasses
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import forget_sets.store as store
from arg_parser import parse_args
from forget_sets.file import load_forget_set, make_forget_set, save_forget_set, sha256_file
from forget_sets.kinds import ForgetPlan, given_set_name, plan_forget_set
from forget_sets.store import build_forget_set, check_can_save, check_fits
from stages.configs import forget_spec
from utils import paths
from utils.errors import UserError


def _args(*argv):
    return parse_args(["--dataset", "digits", "--arch", "cnn_s", *argv])


def _plan(args, data):
    return plan_forget_set(forget_spec(args), data)


def _build(args, data):
    return build_forget_set(forget_spec(args), data, log=lambda msg: None)


def _raw_file(path, forget, retain, manifest=None):
    """A forget-set file written as is, without make_forget_set's cleaning."""
    np.savez(path, forget_ids=np.asarray(forget, np.int64), retain_ids=np.asarray(retain, np.int64),
             manifest=np.array(json.dumps(manifest or {"dataset": "digits", "split_seed": 1})))
    return path


def _one_line(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg
    for part in parts:
        assert part in msg, msg


# ---------------------------------------------------------------------------------------------
# 1. untrusted files; a forget set that takes the whole training split
# ---------------------------------------------------------------------------------------------

def test_file_with_repeated_forget_ids_is_refused(tmp_path, data):
    ids = data.train_ids
    f = _raw_file(tmp_path / "dup.npz", [ids[0], ids[1], ids[0]], ids[2:])
    with pytest.raises(UserError) as e:
        load_forget_set(f)
    _one_line(e, str(f), "forget ids occur more than once", f"[{ids[0]}]")


def test_file_with_repeated_retain_ids_is_refused(tmp_path, data):
    ids = data.train_ids
    f = _raw_file(tmp_path / "dup.npz", ids[:3], np.concatenate([ids[3:], ids[5:7]]))
    with pytest.raises(UserError) as e:
        load_forget_set(f)
    _one_line(e, str(f), "2 retain ids occur more than once")


def test_file_with_empty_retain_or_forget_set_is_refused(tmp_path, data):
    f = _raw_file(tmp_path / "all.npz", data.train_ids, [])
    with pytest.raises(UserError) as e:
        load_forget_set(f)
    _one_line(e, str(f), "retain set is empty")
    f = _raw_file(tmp_path / "none.npz", [], data.train_ids)
    with pytest.raises(UserError) as e:
        load_forget_set(f)
    _one_line(e, str(f), "forget set is empty")


def test_retain_must_be_the_complement(tmp_path, data):
    ids = data.train_ids
    good = make_forget_set(ids, ids[:10], {"dataset": "digits", "split_seed": 1})
    check_fits(good, data, "x")  # a proper partition passes
    missing = _raw_file(tmp_path / "missing.npz", ids[:10], ids[12:])  # ids[10:12] in neither
    fs = load_forget_set(missing)  # the file alone is consistent ...
    with pytest.raises(UserError) as e:  # ... but not a partition of this training split
        check_fits(fs, data, f"--forget_set {missing}")
    _one_line(e, str(missing), "not the complement", "2 training ids are in neither",
              str(ids[10:12].tolist()))
    overlap = _raw_file(tmp_path / "overlap.npz", ids[:10], ids[5:])
    with pytest.raises(UserError) as e:
        check_fits(load_forget_set(overlap), data, f"--forget_set {overlap}")
    _one_line(e, str(overlap), "overlap")
    outside = _raw_file(tmp_path / "outside.npz", ids[:10], np.concatenate([ids[10:], [10 ** 9]]))
    with pytest.raises(UserError) as e:
        check_fits(load_forget_set(outside), data, f"--forget_set {outside}")
    _one_line(e, str(outside), "not training ids")


def test_bad_given_file_is_refused_at_plan_time(env, data):
    tmp, _ = env
    ids = data.train_ids
    for name, forget, retain in (("dup", [ids[0], ids[0]], ids[1:]), ("gap", ids[:5], ids[6:]),
                                 ("empty", ids, [])):
        f = _raw_file(tmp / f"{name}.npz", forget, retain)
        with pytest.raises(UserError) as e:
            _plan(_args("--forget_set", str(f)), data)
        _one_line(e, str(f))
    assert not (tmp / "ckpts" / "forget_sets").exists()
    good = tmp / "good.npz"
    save_forget_set(good, make_forget_set(ids, ids[:5], {"dataset": "digits", "split_seed": 1}))
    plan = _plan(_args("--forget_set", str(good)), data)
    assert plan.given_file and plan.given is not None and plan.given.forget_ids.tolist() == ids[:5].tolist()


@pytest.mark.parametrize("flags", [("--num_indexes_to_replace", "{n}"),
                                   ("--mem", "high", "--num_indexes_to_replace", "{n}"),
                                   ("--mem", "mix", "--num_indexes_to_replace", "{n}"),
                                   ("--class_to_replace", ",".join(map(str, range(10))),
                                    "--num_indexes_to_replace", "{n}")])
def test_whole_training_split_is_refused_at_plan_time(env, data, flags):
    tmp, _ = env
    n = len(data.train_ids)
    with pytest.raises(UserError) as e:
        _plan(_args(*[f.format(n=n) for f in flags]), data)
    _one_line(e, f"--num_indexes_to_replace {n}", "empty retain set", f"1..{n - 1}")
    with pytest.raises(UserError) as e:
        _build(_args(*[f.format(n=n) for f in flags]), data)
    _one_line(e, f"--num_indexes_to_replace {n}")
    assert not (tmp / "ckpts" / "forget_sets").exists()
    # one fewer is fine
    fs, path = _build(_args(*[f.format(n=n - 1) for f in flags]), data)
    assert len(fs.retain_ids) >= 1 and path.is_file()


def test_every_class_without_size_is_refused_at_plan_time(env, data):
    tmp, _ = env
    with pytest.raises(UserError) as e:
        _plan(_args("--class_to_replace", ",".join(map(str, range(10)))), data)
    _one_line(e, "--class_to_replace 0,1,2", "empty retain set")
    assert not (tmp / "ckpts" / "forget_sets").exists()


def test_size_out_of_range_is_refused_at_plan_time(env, data):
    n = len(data.train_ids)
    with pytest.raises(UserError, match="larger than the 1297 training examples"):
        _plan(_args("--mem", "high", "--num_indexes_to_replace", str(n + 1)), data)
    spec = dataclasses.replace(forget_spec(_args("--num_indexes_to_replace", "5")), num_indexes_to_replace=0)
    with pytest.raises(UserError, match="must be a positive integer"):  # the parser refuses 0 already
        plan_forget_set(spec, data)


# ---------------------------------------------------------------------------------------------
# 2. the name of a --forget_set file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["..npz", "...npz", "x/..npz", "../x/...npz"])
def test_dot_names_are_refused(bad):
    with pytest.raises(UserError) as e:
        given_set_name(bad)
    _one_line(e, f"--forget_set {bad}", "rename the file")


def test_given_name_is_sanitized(env, data):
    tmp, _ = env
    ids = data.train_ids
    assert given_set_name("a/b/my set$(x).npz") == "my-set-x"
    assert given_set_name("fs.v2.npz") == "fs.v2"
    d = tmp / "in put"
    d.mkdir()
    f = d / "..weird name;rm.npz"
    save_forget_set(f, make_forget_set(ids, ids[:5], {"dataset": "digits", "split_seed": 1}))
    plan = _plan(_args("--forget_set", str(f)), data)
    assert plan.name == "..weird-name-rm" and plan.path == f
    run = paths.unlearn_run_dir(tmp / "ckpts", plan.name, "m", "tag", 1).resolve()
    assert run.is_relative_to((tmp / "ckpts" / "unlearn").resolve())
    dots = tmp / "..npz"
    save_forget_set(dots, make_forget_set(ids, ids[:5], {"dataset": "digits", "split_seed": 1}))
    with pytest.raises(UserError) as e:
        _plan(_args("--forget_set", str(dots)), data)
    _one_line(e, "--forget_set")


# ---------------------------------------------------------------------------------------------
# 3. the file does not depend on where it was built
# ---------------------------------------------------------------------------------------------

def _build_in(root: Path, monkeypatch, scores, data, *argv):
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    mem = root / "out" / "memorization"
    mem.mkdir(parents=True)
    np.savez(mem / "digits_memorization.npz", memorization=scores)
    return _build(_args("--ckpts", str(root / "out"), *argv), data)


@pytest.mark.parametrize("flags", [("--mem", "high", "--num_indexes_to_replace", "40"),
                                   ("--num_indexes_to_replace", "25", "--seed", "3")])
def test_same_forget_set_same_bytes_in_another_directory(tmp_path, monkeypatch, data, flags):
    scores = np.random.RandomState(0).rand(len(data.x))
    fs_a, a = _build_in(tmp_path / "a", monkeypatch, scores, data, *flags)
    fs_b, b = _build_in(tmp_path / "b" / "deeper", monkeypatch, scores, data, *flags)
    assert a != b and a.name == b.name
    assert sha256_file(a) == sha256_file(b)
    m = load_forget_set(a).manifest
    assert m["eval_score_file"] == "digits_memorization.npz"
    if "--mem" in flags:
        assert m["score_file"] == "digits_memorization.npz"
    assert str(tmp_path) not in json.dumps(m)


def test_proxy_manifest_holds_the_file_name_only(tmp_path, monkeypatch, data):
    scores = np.random.RandomState(0).rand(len(data.x))
    conf = np.random.RandomState(1).rand(len(data.train_ids))
    shas = []
    for where in ("a", "b"):
        pdir = tmp_path / f"proxies_{where}"
        pdir.mkdir()
        np.savez(pdir / "p.npz", ids=data.train_ids, confidence=conf)
        fs, path = _build_in(tmp_path / where, monkeypatch, scores, data, "--mem_proxy", "confidence", "--mem",
                             "high", "--num_indexes_to_replace", "20", "--proxy_file", str(pdir / "p.npz"))
        assert fs.manifest["proxy_file"] == "p.npz"
        shas.append(sha256_file(path))
    assert shas[0] == shas[1]


def test_saved_file_has_fixed_zip_dates(tmp_path, data):
    """np.savez_compressed stamps entries with ZipInfo's default date, not the current time."""
    ids = data.train_ids
    fs = make_forget_set(ids, ids[:9], {"dataset": "digits", "split_seed": 1, "b": 2, "a": 1}, {"x": ids[:3]})
    save_forget_set(tmp_path / "one.npz", fs)
    os.utime(tmp_path / "one.npz", (0, 0))
    save_forget_set(tmp_path / "two.npz", fs)
    with zipfile.ZipFile(tmp_path / "one.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert sha256_file(tmp_path / "one.npz") == sha256_file(tmp_path / "two.npz")


# ---------------------------------------------------------------------------------------------
# 4. an unwritable <ckpts>/forget_sets
# ---------------------------------------------------------------------------------------------

def _plan_at(path: Path) -> ForgetPlan:
    return ForgetPlan("random", path.stem, path, {}, "note")


def test_check_can_save_passes_when_writable_or_nothing_to_write(tmp_path):
    check_can_save(_plan_at(tmp_path / "ckpts" / "forget_sets" / "x.npz"))  # to be created
    (tmp_path / "ro").mkdir()
    existing = tmp_path / "ro" / "x.npz"
    existing.write_bytes(b"")
    check_can_save(_plan_at(existing))  # exists: read, not written
    given = ForgetPlan("file", "x", tmp_path / "nowhere" / "x.npz", {}, "note", given_file=True)
    check_can_save(given)


def test_check_can_save_read_only_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a read-only directory is still writable")
    ro = tmp_path / "ckpts" / "forget_sets"
    ro.mkdir(parents=True)
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError) as e:
            check_can_save(_plan_at(ro / "x.npz"))
        _one_line(e, "--ckpts", str(ro / "x.npz"), "not writable")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("blocker", ["ckpts/forget_sets", "ckpts"])
def test_check_can_save_directory_is_a_file(tmp_path, blocker):
    (tmp_path / blocker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocker).write_text("not a directory")
    target = tmp_path / "ckpts" / "forget_sets" / "x.npz"
    with pytest.raises(UserError) as e:
        check_can_save(_plan_at(target))
    _one_line(e, "--ckpts", str(target), f"{tmp_path / blocker} is a file, not a directory")


def test_check_can_save_target_is_a_directory(tmp_path):
    target = tmp_path / "forget_sets" / "x.npz"
    target.mkdir(parents=True)
    with pytest.raises(UserError) as e:
        check_can_save(_plan_at(target))
    _one_line(e, str(target), "not a file")


def test_build_refuses_unwritable_forget_sets_before_work(env, data, monkeypatch):
    tmp, _ = env
    (tmp / "ckpts" / "forget_sets").write_text("")  # a file where the directory belongs

    def no_build(*a, **k):
        raise AssertionError("built although the file cannot be saved")

    monkeypatch.setattr(store, "build", no_build)
    with pytest.raises(UserError) as e:
        _build(_args("--mem", "high", "--num_indexes_to_replace", "30"), data)
    _one_line(e, "--ckpts", "is a file, not a directory")
    assert (tmp / "ckpts" / "forget_sets").read_text() == ""


def test_save_failure_is_one_line(env, data, monkeypatch):
    """A write that fails anyway (e.g. a differing file rebuilt under --overwrite) is a UserError."""
    def denied(path, fs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store, "save_forget_set", denied)
    with pytest.raises(UserError) as e:
        _build(_args("--num_indexes_to_replace", "30"), data)
    _one_line(e, "--ckpts", "cannot write forget set file", "Permission denied")
