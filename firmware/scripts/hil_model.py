"""PlatformIO pre-build script: the model's C++ sources, kept up to date.

`pio run -e <env>` alone builds the firmware for a model: this script runs
tinyhil's codegen (`python -m harness codegen`) when the model file, its
config or the board changed since the last run (a stamp file records the
SHA-256s), then adds the generated folder to the build.

The model:   HIL_MODEL=/path/model.tflite   (or `custom_hil_model` in the env)
The folder:  HIL_MODEL_DIR (else $PROJECT_WORKSPACE_DIR/hil_model/<env>)
`hil build` runs codegen itself and leaves a matching stamp, so nothing is
generated twice.
The board's own defines come from scripts/hil_board.py.
"""

import hashlib
import json
import os
import subprocess
import sys

from SCons.Script import COMMAND_LINE_TARGETS

Import("env")  # noqa: F821 (SCons injects it)

STAMP = ".hil_model.stamp"
FILES = ("model_data.h", "model_data.cc", "model_ops.h")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_config(model):
    # harness.config owns the lookup; imported here so that a Python without
    # tinyhil gets the one-line error below instead of a traceback.
    try:
        from harness.config import find_model_config
    except ImportError:
        sys.stderr.write("Error: tinyhil is not installed for %s (pip install tinyhil)\n" % sys.executable)
        env.Exit(2)  # noqa: F821
    found = find_model_config(model)
    return str(found) if found else None


def stamp_for(model, board):
    cfg = model_config(model)
    return {
        "model_sha256": sha256(model),
        "config_sha256": sha256(cfg) if cfg else None,
        "board": board,
    }


def main():
    if set(COMMAND_LINE_TARGETS) & {"clean", "cleanall", "envdump", "idedata", "compiledb", "__idedata"}:
        return
    pioenv = env.subst("$PIOENV")
    model = os.environ.get("HIL_MODEL") or env.GetProjectOption("custom_hil_model", "")
    if not model:
        sys.stderr.write(
            "Error: no model for the firmware: set HIL_MODEL=/path/model.tflite "
            "(or custom_hil_model in platformio.ini), or build with `hil build --board %s --model M.tflite`\n"
            % env.GetProjectOption("custom_hil_board", pioenv)
        )
        env.Exit(2)
    model = os.path.abspath(os.path.expanduser(model))
    if not os.path.isfile(model):
        sys.stderr.write("Error: HIL_MODEL=%s does not exist\n" % model)
        env.Exit(2)
    out = os.environ.get("HIL_MODEL_DIR") or os.path.join(env.subst("$PROJECT_WORKSPACE_DIR"), "hil_model", pioenv)
    out = os.path.abspath(out)
    board = env.GetProjectOption("custom_hil_board", pioenv)
    want = stamp_for(model, board)
    stamp_path = os.path.join(out, STAMP)
    try:
        with open(stamp_path) as f:
            have = json.load(f)
    except (OSError, ValueError):
        have = None
    if have != want or not all(os.path.isfile(os.path.join(out, f)) for f in FILES):
        print("hil: generating the model sources for %s in %s" % (os.path.basename(model), out))
        cmd = [
            env.subst("$PYTHONEXE") or sys.executable,
            "-m",
            "harness",
            "codegen",
            "--model",
            model,
            "--out",
            out,
            "--board",
            board,
        ]
        if subprocess.call(cmd) != 0:
            sys.stderr.write(
                "Error: `%s` failed (is tinyhil installed for this Python? pip install tinyhil)\n" % " ".join(cmd)
            )
            env.Exit(2)
        with open(stamp_path, "w") as f:
            json.dump(want, f)
    env.Append(CPPPATH=[out])
    env.Replace(HIL_MODEL_DIR=out)
    env.BuildSources(os.path.join("$BUILD_DIR", "hil_model"), out, src_filter="+<*.cc>")


main()
