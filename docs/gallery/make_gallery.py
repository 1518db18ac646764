"""Makes the user guide's gallery: runs the documented commands, then keeps small copies of their PNGs.

    python docs/gallery/make_gallery.py            # about 3 minutes on 2 cores
    python docs/gallery/make_gallery.py --work DIR --no-run   # shrink what an earlier run left in DIR

The commands run in a scratch folder (`--work`, default a temporary one) exactly as docs/command-line.md
writes them, reading MovieLens from `CFCORE_DATA_DIR`. Each PNG is then reduced to a 256-colour
palette (and, if wider than 1600 px, scaled down) so that it stays well under 200 KB in git.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# The commands of docs/command-line.md, in order.
COMMANDS = [
    "cfcore train --model regularized --dataset 100k --backend tf --out runs/reg",
    "cfcore train --model mf --dim 30 --init-stddev 0.05 --steps 1000 --lr 10 --fold u1 --out runs/mf",
    "cfcore explore --dataset 100k --out reports/explore",
    "cfcore plot --history runs/reg/history.csv --embeddings runs/mf/embeddings.npz "
    "--embeddings runs/reg/embeddings.npz",
]
# Gallery name <- the PNG a command wrote, relative to the scratch folder.
PICTURES = {
    "users.png": "reports/explore/users.png",
    "movies.png": "reports/explore/movies.png",
    "curves_reg.png": "reports/plots/curves_reg.png",
    "norms.png": "reports/plots/norms.png",
    "tsne_reg.png": "reports/plots/tsne_reg.png",
}
MAX_BYTES = 200_000
MAX_WIDTH = 1600


def shrink(src: Path, dst: Path) -> int:
    """Writes `src` as a 256-colour PNG at most MAX_WIDTH wide; returns its size in bytes."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if img.width > MAX_WIDTH:
        img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.LANCZOS)
    small = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = dst.with_name(f".{dst.name}.tmp")
    small.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, dst)
    return dst.stat().st_size


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: temporary)")
    p.add_argument("--no-run", action="store_true", help="only shrink the PNGs already in --work")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cfcore-gallery-"))
    if not args.no_run:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'backends'}"}
        for cmd in COMMANDS:
            print("$", cmd, flush=True)
            argv_ = [sys.executable, "-m", "cfcore.cli", *shlex.split(cmd)[1:], "--no-progress"]
            if cmd.startswith("cfcore explore"):
                argv_.remove("--no-progress")  # explore shows no progress bar
            subprocess.run(argv_, cwd=work, env=env, check=True)
    for name, rel in PICTURES.items():
        size = shrink(work / rel, HERE / name)
        print(f"{name}: {size / 1000:.0f} KB")
        if size > MAX_BYTES:
            raise SystemExit(f"{name} is {size} bytes, above {MAX_BYTES}: make the figure smaller")


if __name__ == "__main__":
    main()
