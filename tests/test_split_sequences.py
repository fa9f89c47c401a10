"""`segtrain split-sequences`: per-sequence counts, whole sequences held out, the shipped CamVid lists."""

from pathlib import Path

from conftest import shared_data

from segtrain import cli

REPO = Path(__file__).resolve().parents[1]


def _lists(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "train.txt"
    train.write_text("".join(f"/d/train/{s}_{i:04d}.png /d/trainannot/{s}_{i:04d}.png\n"
                             for s, n in (("A1", 3), ("B2", 2), ("A1x", 1)) for i in range(n)))
    val = tmp_path / "val.txt"
    val.write_text("# a comment\n" + "".join(f"/d/val/B2_{i:04d}.png /d/valannot/B2_{i:04d}.png\n" for i in range(4)))
    return train, val


def test_counts_each_sequence_of_each_list(tmp_path, capsys):
    train, val = _lists(tmp_path)
    assert cli.main(["split-sequences", str(train), str(val)]) == 0
    out = capsys.readouterr().out
    assert f"{train}: 6 frames: A1 3, A1x 1, B2 2" in out
    assert f"{val}: 4 frames: B2 4" in out


def test_holdout_moves_whole_sequences_from_all_lists_and_keeps_lines(tmp_path):
    train, val = _lists(tmp_path)
    assert cli.main(["split-sequences", str(train), str(val), "--holdout", "B2", "--output", str(tmp_path / "out")]) == 0
    held_train = (tmp_path / "out" / "holdout_B2_train.txt").read_text().splitlines()
    held_val = (tmp_path / "out" / "holdout_B2_val.txt").read_text().splitlines()
    every = [l for l in (train.read_text() + val.read_text()).splitlines() if not l.startswith("#")]
    assert sorted(held_train + held_val) == sorted(every)
    assert held_val == [l for l in every if "/B2_" in l.split()[0]]  # list order kept, train's B2 first
    assert all("/B2_" not in l for l in held_train) and len(held_val) == 6


def test_unknown_sequence_missing_output_and_unmatched_names_are_one_line_errors(tmp_path, capsys):
    train, val = _lists(tmp_path)
    assert cli.main(["split-sequences", str(train), "--holdout", "C3", "--output", str(tmp_path)]) == 1
    assert "--holdout C3: no such sequence in the lists; they have A1, A1x, B2" in capsys.readouterr().err
    assert cli.main(["split-sequences", str(train), "--holdout", "A1"]) == 1
    assert "--output" in capsys.readouterr().err
    assert cli.main(["split-sequences", str(train), "--pattern", r"^(\d+)-"]) == 1
    assert "no sequence in the name" in capsys.readouterr().err
    assert not (tmp_path / "holdout_C3_train.txt").exists()


def test_the_shipped_camvid_holdout_lists_are_what_the_tool_writes(tmp_path):
    root = shared_data("camvid")
    assert cli.main(["split-sequences", str(root / "train.txt"), str(root / "val.txt"),
                     "--holdout", "0006R0", "--output", str(tmp_path)]) == 0
    for part in ("train", "val"):
        shipped = (REPO / "configs/camvid/splits" / f"holdout_0006R0_{part}.txt").read_text()
        assert (tmp_path / f"holdout_0006R0_{part}.txt").read_text() == shipped
