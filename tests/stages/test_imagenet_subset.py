"""imagenet_mem_subset.py on a fake ImageFolder and a fake imagenet_index.npz."""

import numpy as np
import pytest

from helpers import exit_code
from PIL import Image

import imagenet_mem_subset
from forget_sets.file import load_forget_set

# class folder -> image stems; ImageFolder order: classes sorted, files sorted within a class
CLASSES = {"n02": ["n02_5", "n02_1", "n02_3"], "n01": ["n01_7", "n01_2", "n01_9", "n01_4"]}
ORDER = ["n01_2", "n01_4", "n01_7", "n01_9", "n02_1", "n02_3", "n02_5"]  # index = global id
SCORES = {"n01_2": 0.95, "n01_4": 0.10, "n01_7": 0.47, "n01_9": -0.05, "n02_1": 0.72, "n02_3": 0.55,
          "n02_5": 0.30, "n03_1": 0.99}  # n03_1 is not in the folder


@pytest.fixture()
def fake(tmp_path):
    train = tmp_path / "train"
    for c, stems in CLASSES.items():
        (train / c).mkdir(parents=True)
        for s in stems:
            Image.new("RGB", (2, 2), (10, 20, 30)).save(train / c / f"{s}.png")
    (train / "n01" / "notes.txt").write_text("not an image")
    names = list(SCORES)[::-1]  # index order differs from folder order
    np.savez(tmp_path / "imagenet_index.npz", tr_mem=np.array([SCORES[n] for n in names], np.float32),
             tr_filenames=np.array([f"{n}.JPEG".encode() for n in names]))
    return tmp_path


def run(monkeypatch, argv):
    return exit_code(imagenet_mem_subset, argv, monkeypatch)


def _ids(stems):
    return [ORDER.index(s) for s in stems]


def test_forget_sets_by_score(fake, monkeypatch, capsys):
    argv = ["--num_indexes_to_replace", "3", "--seed", "2", "--mem_file", str(fake / "imagenet_index.npz"),
            "--train_dir", str(fake / "train"), "--ckpts", str(fake / "ckpts"), "--save_dir", str(fake)]
    assert run(monkeypatch, argv) == 0
    out = capsys.readouterr().out
    assert "7 matched" in out and "1 scored images are not in" in out
    fs = {lv: load_forget_set(fake / "ckpts" / "forget_sets" / f"imagenet_mem-{lv}_n3.npz")
          for lv in ("low", "mid", "high", "mix")}
    # in score order, highest first; low keeps descending order (lowest last); mid closest to 0.5
    assert fs["high"].forget_ids.tolist() == _ids(["n01_2", "n02_1", "n02_3"])
    assert fs["low"].forget_ids.tolist() == _ids(["n02_5", "n01_4", "n01_9"])
    assert fs["mid"].forget_ids.tolist() == _ids(["n01_7", "n02_3", "n02_5"])
    assert fs["mix"].forget_ids.tolist() == _ids(["n01_2", "n01_7", "n01_9"])
    for f in fs.values():
        assert sorted(f.forget_ids.tolist() + f.retain_ids.tolist()) == list(range(7))
        assert f.manifest["dataset"] == "imagenet" and f.manifest["num_train"] == 7
        assert f.manifest["name"].startswith("imagenet_mem-")
    assert fs["high"].extras["high_mem"].tolist() == _ids(["n01_2", "n02_1", "n02_3"])
    with np.load(fake / "imagenet_filenames_indices_3_2.npz") as z:
        assert z["high_mem_indices"].tolist() == sorted(_ids(["n01_2", "n02_1", "n02_3"]))
        assert z["med_mem_indices"].tolist() == sorted(_ids(["n01_7", "n02_3", "n02_5"]))
        assert z["low_mem_indices"].tolist() == sorted(_ids(["n02_5", "n01_4", "n01_9"]))
    # the same selection again: kept
    assert run(monkeypatch, argv) == 0
    assert "already holds this forget set" in capsys.readouterr().out


def test_bad_input(fake, monkeypatch, capsys):
    base = ["--train_dir", str(fake / "train"), "--ckpts", str(fake / "ckpts"), "--save_dir", str(fake)]
    idx = ["--mem_file", str(fake / "imagenet_index.npz")]
    for argv, want in ((base + idx, "--num_indexes_to_replace N is required"),
                       (base + idx + ["--num_indexes_to_replace", "8"], "larger than the 7"),
                       (base + ["--num_indexes_to_replace", "2", "--mem_file", str(fake / "nope.npz")], "nope.npz"),
                       (idx + ["--num_indexes_to_replace", "2", "--train_dir", str(fake / "none")], "--train_dir")):
        assert run(monkeypatch, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and want in err
    bad = fake / "bad.npz"
    np.savez(bad, tr_mem=np.zeros(3))
    assert run(monkeypatch, base + ["--num_indexes_to_replace", "2", "--mem_file", str(bad)]) == 2
    assert "tr_filenames" in capsys.readouterr().err


def _files(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["ckpts_is_a_file", "save_dir_is_a_file", "index_file_differs"])
def test_output_refusals_write_nothing(fake, monkeypatch, capsys, case):
    (fake / "a_file").write_text("x")
    out = fake / "out"
    out.mkdir()
    argv = ["--num_indexes_to_replace", "3", "--seed", "2", "--mem_file", str(fake / "imagenet_index.npz"),
            "--train_dir", str(fake / "train"), "--ckpts", str(out / "ckpts"), "--save_dir", str(out)]
    if case == "ckpts_is_a_file":
        argv[argv.index("--ckpts") + 1], want = str(fake / "a_file"), "--ckpts"
    elif case == "save_dir_is_a_file":
        argv[argv.index("--save_dir") + 1], want = str(fake / "a_file" / "sub"), "--save_dir"
    else:
        np.savez(out / "imagenet_filenames_indices_3_2.npz", high_mem_indices=np.arange(3))
        want = "--overwrite"
    before = _files(fake)
    assert run(monkeypatch, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and want in err and "Traceback" not in err
    assert _files(fake) == before
