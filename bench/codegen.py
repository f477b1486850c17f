"""Benchmark `hil codegen` on an 8 MB model, side by side in one run:

1. generation time of `harness.codegen.generate()` (array form, arena
   measurement included) and of the `hil codegen` command, vs `xxd -i` on
   the same file (goal: <= 1.0x xxd);
2. `arm-none-eabi-g++ -O2` compile time and peak memory of the generated
   `model_data.cc`, array form vs incbin form (goal: incbin >= 50x faster).

The model is a real .tflite: a Keras Dense(4096 -> 2048) converted with int8
weights (about 8 MiB), cached under bench/.cache/ (not committed).

    python bench/codegen.py [--model M.tflite] [--repeat 3] [--json bench/results/codegen.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU = "cortex-m55"


def make_model(path: Path) -> Path:
    """Dense 4096 -> 2048, int8 weights, float I/O: ~8.4 M weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4096,)), tf.keras.layers.Dense(2048)])
    rng = np.random.default_rng(0)

    def rep():
        for _ in range(4):
            yield [rng.standard_normal((1, 4096)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def timed(cmd: list[str], **kw) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of `cmd` and all its descendants, measured
    in a fresh Python so RUSAGE_CHILDREN holds only this command."""
    probe = (
        "import json,resource,subprocess,sys,time;"
        "t=time.perf_counter();r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
        "dt=time.perf_counter()-t;"
        "print(json.dumps([r.returncode,dt,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True, **kw)
    rc, dt, rss = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} failed ({rc}): {out.stderr[-2000:]}")
    return dt, rss


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="an existing .tflite (default: build/cached 8 MB dense model)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "codegen.json")
    args = ap.parse_args(argv)

    from harness import codegen
    from harness.fileio import write_json_atomic

    model = args.model or ROOT / "bench" / ".cache" / "dense_8mb.tflite"
    if not model.exists():
        print(f"building {model} ...", file=sys.stderr)
        make_model(model)
    size = model.stat().st_size
    gxx = shutil.which("arm-none-eabi-g++")
    xxd = shutil.which("xxd")
    hil = shutil.which("hil")
    res: dict = {
        "model": str(model),
        "model_bytes": size,
        "repeat": args.repeat,
        "cpu": CPU,
        "host": platform.node(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
    }

    with tempfile.TemporaryDirectory(prefix="hil_bench_") as tmp:
        tmp = Path(tmp)
        # -- generation -----------------------------------------------------
        if xxd:
            res["xxd_s"] = median_time(
                lambda: subprocess.run(f"{xxd} -i '{model}' > '{tmp}/xxd.cc'", shell=True, check=True), args.repeat
            )
        n = iter(range(1000))

        def gen(fmt: str, measure: bool = True):
            out = tmp / f"gen_{fmt}_{next(n)}"  # a fresh folder: every file is written
            return codegen.generate(model, out, fmt=fmt, arena_bytes=None if measure else 4096)

        codegen.generate(model, tmp / "warm", arena_bytes=4096)  # imports, page cache
        res["generate_array_s"] = median_time(lambda: gen("array"), args.repeat)
        res["generate_array_no_arena_s"] = median_time(lambda: gen("array", False), args.repeat)
        res["generate_incbin_s"] = median_time(lambda: gen("incbin"), args.repeat)
        if hil:
            res["cli_array_s"] = median_time(
                lambda: subprocess.run(
                    [hil, "codegen", "-q", "--model", str(model), "--out", str(tmp / f"cli_{next(n)}")], check=True
                ),
                args.repeat,
            )
        if xxd:
            res["ratio_generate_vs_xxd"] = res["generate_array_s"] / res["xxd_s"]
            if "cli_array_s" in res:
                res["ratio_cli_vs_xxd"] = res["cli_array_s"] / res["xxd_s"]

        # -- target compile ---------------------------------------------------
        if gxx:
            arr = gen("array", False).out_dir
            inc = gen("incbin", False).out_dir
            for form, d in (("array", arr), ("incbin", inc)):
                cmd = [
                    gxx,
                    f"-mcpu={CPU}",
                    "-mthumb",
                    "-O2",
                    "-std=c++17",
                    "-I",
                    str(d),
                    "-c",
                    str(d / "model_data.cc"),
                    "-o",
                    str(tmp / f"{form}.o"),
                ]
                runs = [timed(cmd) for _ in range(1 if form == "array" else args.repeat)]
                res[f"compile_{form}_s"] = statistics.median(r[0] for r in runs)
                res[f"compile_{form}_peak_rss_kib"] = max(r[1] for r in runs)
            res["compile_speedup_incbin"] = res["compile_array_s"] / res["compile_incbin_s"]
            res["compile_memory_ratio"] = res["compile_array_peak_rss_kib"] / res["compile_incbin_peak_rss_kib"]
            if xxd:
                # the seed's flow: compile what `xxd -i` wrote
                t, rss = timed(
                    [
                        gxx,
                        f"-mcpu={CPU}",
                        "-mthumb",
                        "-O2",
                        "-x",
                        "c++",
                        "-c",
                        str(tmp / "xxd.cc"),
                        "-o",
                        str(tmp / "xxd.o"),
                    ]
                )
                res["compile_xxd_s"], res["compile_xxd_peak_rss_kib"] = t, rss

    res["goals"] = {
        "generate_le_1x_xxd": res.get("ratio_generate_vs_xxd", float("nan")) <= 1.0,
        "incbin_ge_50x_faster": res.get("compile_speedup_incbin", 0) >= 50,
    }
    write_json_atomic(args.json, res)

    def row(what, value, unit=""):
        print(f"  {what:<44} {value:>12}{unit}")

    print(f"hil codegen benchmark: {model.name}, {size:,} bytes ({size / 2**20:.2f} MiB), median of {args.repeat}")
    print("generation")
    for k, label in (
        ("xxd_s", "xxd -i > file"),
        ("generate_array_s", "generate() array, arena measured"),
        ("generate_array_no_arena_s", "generate() array, arena given"),
        ("generate_incbin_s", "generate() incbin, arena measured"),
        ("cli_array_s", "hil codegen (new process) array"),
    ):
        if k in res:
            row(label, f"{res[k]:.3f}", " s")
    if "ratio_generate_vs_xxd" in res:
        row("ratio generate()/xxd (goal <= 1.0)", f"{res['ratio_generate_vs_xxd']:.2f}", " x")
    if "ratio_cli_vs_xxd" in res:
        row("ratio hil codegen/xxd", f"{res['ratio_cli_vs_xxd']:.2f}", " x")
    if gxx:
        print(f"arm-none-eabi-g++ -mcpu={CPU} -O2 -c model_data.cc")
        for form in ("array", "incbin", "xxd"):
            if f"compile_{form}_s" in res:
                row(
                    f"{form}", f"{res[f'compile_{form}_s']:.3f} s, {res[f'compile_{form}_peak_rss_kib'] / 1024:.0f} MiB"
                )
        row("incbin speedup (goal >= 50)", f"{res['compile_speedup_incbin']:.0f}", " x")
        row("peak memory array/incbin", f"{res['compile_memory_ratio']:.0f}", " x")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
