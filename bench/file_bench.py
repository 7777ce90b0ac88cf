"""File encryption throughput against a plain copy of the same file, on the same disk, in one run.

Each round copies, encrypts and decrypts the same source file (the order rotates from round to
round so no operation always runs on a warmer cache), and prints MiB/s for each and the median
ratios encrypt/copy and decrypt/copy. The plain copy is the best a Python process does without
transforming the data: one reused 1 MiB buffer, `readinto` then `write`. Files are opened as the
agent opens them (`open_source` / `open_sink` where the format module has them, else `open`);
with `--fsync` every output is fsynced before the clock stops, as the agent's CLI does.

Beside wall-clock MiB/s it prints MiB per CPU-second of this process: on a shared host the wall
clock also measures the neighbours, while CPU time shows what each operation itself costs.

`--baseline /path/to/other/checkout` adds that checkout's agent/fileformat.py (e.g. main's) to
the same rounds as `old-encrypt` / `old-decrypt`, so before and after share a run and a disk.

Run: python bench/file_bench.py [--mib 256] [--rounds 4] [--dir DIR] [--fsync] [--baseline ROOT]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
MIB = 1024 * 1024

sys.path.insert(0, str(ROOT))


def load_format(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temporary directory in .)")
    parser.add_argument("--fsync", action="store_true", help="fsync each output before stopping the clock")
    parser.add_argument("--baseline", help="another checkout whose agent/fileformat.py joins the same rounds")
    args = parser.parse_args()

    from agent import fileformat

    formats = {"": fileformat}
    if args.baseline:
        formats["old-"] = load_format(Path(args.baseline) / "agent" / "fileformat.py", "baseline_fileformat")

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

    def opener(module, name: str, mode: str):
        return getattr(module, name, lambda path: open(path, mode))

    def encrypt_with(module):
        def encrypt(src_path: Path, dst_path: Path) -> None:
            with opener(module, "open_source", "rb")(src_path) as src, \
                    opener(module, "open_sink", "wb")(dst_path) as dst:
                module.encrypt_stream(src, dst, key=KEY, key_id="bench", key_version=1)
                finish(dst)
        return encrypt

    def decrypt_with(module):
        def decrypt(src_path: Path, dst_path: Path) -> None:
            with opener(module, "open_source", "rb")(src_path) as src, \
                    opener(module, "open_sink", "wb")(dst_path) as dst:
                module.decrypt_stream(src, dst, key=KEY)
                finish(dst)
        return decrypt

    with tempfile.TemporaryDirectory(prefix="file-bench-", dir=args.dir or ".") as work:
        root = Path(work)
        plain, copied = root / "plain", root / "copy"
        with open(plain, "wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(MIB))
        operations = [("copy", copy, plain, copied)]
        for prefix, module in formats.items():
            sealed, opened = root / f"{prefix}sealed", root / f"{prefix}opened"
            encrypt_with(module)(plain, sealed)  # decrypt needs an input whatever the order
            operations += [(f"{prefix}encrypt", encrypt_with(module), plain, sealed),
                           (f"{prefix}decrypt", decrypt_with(module), sealed, opened)]
        names = [name for name, *_ in operations]
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        chunks = ", ".join(f"{p or 'this '}chunk {getattr(m, 'DEFAULT_CHUNK_SIZE', 65536) // 1024} KiB"
                           for p, m in formats.items())
        print(f"{args.mib} MiB, {chunks}, {args.rounds} rounds, fsync={args.fsync}, dir={root.parent.resolve()}")
        for round_no in range(args.rounds):
            shift = round_no % len(operations)
            for name, run, src_path, dst_path in operations[shift:] + operations[:shift]:
                dst_path.unlink(missing_ok=True)
                start, start_cpu = time.perf_counter(), time.process_time()
                run(src_path, dst_path)
                wall[name].append(args.mib / (time.perf_counter() - start))
                cpu[name].append(args.mib / max(time.process_time() - start_cpu, 1e-9))
            print(f"  round {round_no + 1}: " + "  ".join(f"{n} {wall[n][-1]:6.0f}" for n in names) + "  MiB/s")
        for prefix in formats:
            assert (root / f"{prefix}opened").read_bytes() == plain.read_bytes()
        for name in names:
            print(f"{name:12s} MiB/s: min {min(wall[name]):6.0f}  median {statistics.median(wall[name]):6.0f}  "
                  f"max {max(wall[name]):6.0f}   MiB per CPU-second: median {statistics.median(cpu[name]):6.0f}")
        for name in names[1:]:
            ratios = [w / c for w, c in zip(wall[name], wall["copy"], strict=True)]
            cpu_ratios = [w / c for w, c in zip(cpu[name], cpu["copy"], strict=True)]
            print(f"{name}/copy: median {statistics.median(ratios):.2f} (per round "
                  f"{', '.join(f'{v:.2f}' for v in ratios)}); per CPU-second {statistics.median(cpu_ratios):.2f}")


if __name__ == "__main__":
    main()
