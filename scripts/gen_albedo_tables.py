"""Regenerate pbrfit's GGX albedo tables (core/pbrfit/data/*.npy).

Usage: python scripts/gen_albedo_tables.py [--log2-samples 16]

See pbrfit.albedo_tables for what each table holds. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pbrfit.albedo_tables import DATA_DIR, compute_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2-samples", type=int, default=16, help="log2 of QMC samples per table cell")
    args = ap.parse_args()
    t0 = time.time()
    tables = compute_tables(args.log2_samples)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, arr in tables.items():
        np.save(DATA_DIR / f"{name}.npy", arr)
        print(f"{name}: shape {arr.shape}, range [{arr.min():.4f}, {arr.max():.4f}]")
    print(f"done in {time.time() - t0:.0f} s -> {DATA_DIR}")


if __name__ == "__main__":
    main()
