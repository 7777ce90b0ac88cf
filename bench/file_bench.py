"""File encryption throughput against a plain copy of the same file, on the same disk, in one run.

Each round copies, encrypts and decrypts the same source file (the order rotates from round to
round so no operation always runs on a warmer cache), and prints MiB/s for each and the median
ratios encrypt/copy and decrypt/copy. The plain copy is the best a Python process does without
transforming the data: one reused 1 MiB buffer, `readinto` then `write` (the same whichever tree
is measured, so ratios of two trees compare).
Files are opened as the agent opens them (`agent.fileformat.open_source` / `open_sink`); with
`--fsync` every output is fsynced before the clock stops, as the agent's CLI does.
Beside wall-clock MiB/s it prints MiB per CPU-second of this process: on a shared host the wall
clock also measures the neighbours, while CPU time shows what each operation itself costs.

Run: python bench/file_bench.py [--mib 256] [--rounds 4] [--dir DIR] [--fsync] [--tree ROOT]
(`--tree /path/to/other/checkout` measures another version of agent/fileformat.py; default this one.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

KEY = bytes(range(32))
MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temporary directory in .)")
    parser.add_argument("--fsync", action="store_true", help="fsync each output before stopping the clock")
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]), help="checkout to import from")
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    from agent import fileformat

    chunk = getattr(fileformat, "DEFAULT_CHUNK_SIZE", 64 * 1024)
    open_source = getattr(fileformat, "open_source", lambda path: open(path, "rb"))  # noqa: SIM115
    open_sink = getattr(fileformat, "open_sink", lambda path: open(path, "wb"))  # noqa: SIM115

    def finish(dst) -> None:
        dst.flush()
        if args.fsync:
            os.fsync(dst.fileno())

    def copy(src_path: Path, dst_path: Path) -> None:
        buf = bytearray(MIB)
        view = memoryview(buf)
        with open(src_path, "rb", buffering=0) as src, open(dst_path, "wb", buffering=0) as dst:
            while n := src.readinto(buf):
                dst.write(view[:n])
            finish(dst)

    def encrypt(src_path: Path, dst_path: Path) -> None:
        with open_source(src_path) as src, open_sink(dst_path) as dst:
            fileformat.encrypt_stream(src, dst, key=KEY, key_id="bench", key_version=1)
            finish(dst)

    def decrypt(src_path: Path, dst_path: Path) -> None:
        with open_source(src_path) as src, open_sink(dst_path) as dst:
            fileformat.decrypt_stream(src, dst, key=KEY)
            finish(dst)

    with tempfile.TemporaryDirectory(prefix="file-bench-", dir=args.dir or ".") as work:
        root = Path(work)
        plain, copied, sealed, opened = (root / n for n in ("plain", "copy", "sealed", "opened"))
        with open(plain, "wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(MIB))
        encrypt(plain, sealed)  # decrypt needs an input in the first round whatever the order
        operations = [("copy", copy, plain, copied), ("encrypt", encrypt, plain, sealed),
                      ("decrypt", decrypt, sealed, opened)]
        rates: dict[str, list[float]] = {name: [] for name, *_ in operations}
        cpu_rates: dict[str, list[float]] = {name: [] for name, *_ in operations}
        ratios: dict[str, list[float]] = {"encrypt": [], "decrypt": []}
        cpu_ratios: dict[str, list[float]] = {"encrypt": [], "decrypt": []}
        print(f"{args.mib} MiB, chunk {chunk // 1024} KiB, {args.rounds} rounds, fsync={args.fsync}, "
              f"dir={root.parent.resolve()}, tree={args.tree}")
        for round_no in range(args.rounds):
            turn = operations[round_no % 3:] + operations[: round_no % 3]
            this_round, this_cpu = {}, {}
            for name, run, src_path, dst_path in turn:
                dst_path.unlink(missing_ok=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                run(src_path, dst_path)
                this_round[name] = args.mib / (time.perf_counter() - start)
                this_cpu[name] = args.mib / max(time.process_time() - start_cpu, 1e-9)
                rates[name].append(this_round[name])
                cpu_rates[name].append(this_cpu[name])
            for name in ratios:
                ratios[name].append(this_round[name] / this_round["copy"])
                cpu_ratios[name].append(this_cpu[name] / this_cpu["copy"])
            print(f"  round {round_no + 1}: " + "  ".join(f"{n} {this_round[n]:7.0f} MiB/s" for n, *_ in operations))
        assert opened.read_bytes() == plain.read_bytes()
        for name, values in rates.items():
            print(f"{name:8s} MiB/s: min {min(values):6.0f}  median {statistics.median(values):6.0f}  "
                  f"max {max(values):6.0f}")
        for name, values in cpu_rates.items():
            print(f"{name:8s} MiB per CPU-second: median {statistics.median(values):6.0f}")
        for name, values in ratios.items():
            print(f"{name}/copy ratio: median {statistics.median(values):.2f} "
                  f"(per round {', '.join(f'{v:.2f}' for v in values)}); "
                  f"per CPU-second: median {statistics.median(cpu_ratios[name]):.2f}")


if __name__ == "__main__":
    main()
