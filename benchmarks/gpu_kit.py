"""Pack CamVid and the Python wheels a lent GPU machine lacks into folders that travel with a device run.

The device machine (see the device tool's README) gets the working tree plus at most 64 MiB
of carried folders. It has JAX but neither Keras nor albumentations, and CamVid's PNG frames
(about 120 MB) do not fit. So this re-encodes the frames as JPEG (quality 95, the masks stay
the original PNGs: labels are never re-encoded lossily) into ``gpu_kit/camvid`` with SegNet
list files, and prints how far the JPEG pixels are from the PNG ones. The wheels go to
``.whl`` (``pip download`` for the machine's Python 3.12); both folders are ignored by git. What
it printed (frames, PSNR, sizes) goes to benchmarks/results/gpu_kit.{json,md}.

    python benchmarks/gpu_kit.py --camvid ../shared/data/camvid
    # then, with the device tool: carry [".whl", "gpu_kit"], command: bash benchmarks/gpu_camvid.sh
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from results_file import write_results  # benchmarks/results_file.py

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
LIMIT_MIB = 64
# What Keras and albumentations need beyond the machine's image (jax, numpy, scipy, h5py, rich,
# ml-dtypes, absl-py, pyyaml, pillow, opencv-python-headless, matplotlib are there).
WHEELS = ["keras==3.15.1", "namex==0.1.0", "optree==0.20.0", "albumentations==2.0.8", "albucore==0.0.24",
          "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "stringzilla==5.3.2", "simsimd==6.5.16"]
PYTHON = "3.12"  # the device machine's Python
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def pack_camvid(source: Path, out: Path, quality: int) -> list[float]:
    """JPEG frames + the original PNG masks + list files; returns each frame's PSNR against its PNG."""
    scores = []
    for split in ("train", "val"):
        lines = []
        for line in (source / f"{split}.txt").read_text().split("\n"):
            if not line.strip():
                continue
            image_path, mask_path = (source.joinpath(*Path(p).parts[-2:]) for p in line.split())
            image_rel = Path(image_path.parent.name) / (image_path.stem + ".jpg")
            mask_rel = Path(mask_path.parent.name) / mask_path.name
            for rel in (image_rel, mask_rel):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
            frame = np.asarray(Image.open(image_path).convert("RGB"))
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=quality)
            (out / image_rel).write_bytes(buffer.getvalue())
            scores.append(psnr(frame, np.asarray(Image.open(buffer).convert("RGB"))))
            shutil.copyfile(mask_path, out / mask_rel)
            lines.append(f"{image_rel.as_posix()} {mask_rel.as_posix()}")
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return scores


def download_wheels(out: Path) -> None:
    platforms = [x for p in PLATFORMS for x in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", PYTHON, "--implementation", "cp", *platforms, "-d", str(out), *WHEELS],
                   check=True)


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=CAMVID)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--no-wheels", action="store_true", help="pack CamVid only")
    args = parser.parse_args()
    if not (args.camvid / "train.txt").is_file() or not (args.camvid / "val.txt").is_file():
        sys.exit(f"error: {args.camvid}: no CamVid train.txt/val.txt (SegNet layout) there; pass --camvid")
    kit, wheels = REPO / "gpu_kit" / "camvid", REPO / ".whl"
    shutil.rmtree(kit, ignore_errors=True)
    scores = pack_camvid(args.camvid, kit, args.quality)
    lines = [f"CamVid: {len(scores)} frames as JPEG q{args.quality}, PSNR against the PNGs median "
             f"{np.median(scores):.1f} dB (min {min(scores):.1f}); {size_mib(kit):.1f} MiB in {kit}"]
    print(lines[-1])
    figures = {"frames": len(scores), "quality": args.quality, "psnr_median_db": float(np.median(scores)),
               "psnr_min_db": float(min(scores)), "camvid_mib": size_mib(kit)}
    if not args.no_wheels:
        download_wheels(wheels)
        lines.append(f"wheels: {len(list(wheels.glob('*.whl')))} files, {size_mib(wheels):.1f} MiB in {wheels}")
        print(lines[-1])
        figures.update(wheel_files=len(list(wheels.glob("*.whl"))), wheels_mib=size_mib(wheels))
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((REPO / p.decode()).stat().st_size for p in tracked if p and (REPO / p.decode()).is_file()) / 2**20
    total = tree + size_mib(kit) + (size_mib(wheels) if wheels.is_dir() else 0)
    lines.append(f"travels: {total:.1f} MiB with the tracked files ({tree:.1f} MiB); limit {LIMIT_MIB} MiB")
    print(lines[-1])
    figures.update(tracked_mib=tree, travels_mib=total, wheels_counted=wheels.is_dir())
    write_results("gpu_kit", figures, ["```", *lines, "```"],
                  ["PSNR of each JPEG frame against its PNG (8-bit RGB); sizes are the files' bytes / 2^20. "
                   "`travels` adds the tracked files of the checkout and `.whl` if it exists. "
                   f"Wheels: `pip download --python-version {PYTHON}` ({', '.join(WHEELS)})."])
    if total > LIMIT_MIB:
        sys.exit(f"error: {total:.1f} MiB is over the device tool's {LIMIT_MIB} MiB; lower --quality")


if __name__ == "__main__":
    main()
