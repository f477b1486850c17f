"""PlatformIO pre-build script: TensorFlow Lite Micro from a local tree, as
a static library of a registry platform's env (the Arduino Nano 33 BLE).

The offline platform (platforms/hil-offline) builds TFLM itself; an env on
a registry platform gets the same tree, so every target runs the same
kernels as the host's oracle. The tree is made by TFLM's
create_tflm_tree.py (a Cortex-M4 CMSIS-NN one for the Nano): `--tflm` of
`hil build`, else `custom_hil_tflm_dir`, else HIL_TFLM_M4_DIR, else
HIL_TFLM_DIR (harness.tflm.tree_for, which also owns the tree's include
folders, defines and sources, and leaves out the logging and time seams
that lib/hil_runner implements).

The library is declared here, before the framework's script adds the
core's flags, with the global environment itself (not a clone) and a few
overrides: SCons expands the command lines when it compiles, so TFLM gets
the flags the sketch gets, -mcpu, -mfpu and float ABI included.
"""

import os
import sys

Import("env")  # noqa: F821 (SCons injects it)

try:
    from harness import tflm
    from harness.errors import HilError
except ImportError as exc:
    sys.stderr.write("Error: tinyhil is not importable by PlatformIO's Python (%s): pip install tinyhil\n" % exc)
    env.Exit(2)


def tflm_tree():
    core = env.BoardConfig().get("build.cpu", "")
    given = env.GetProjectOption("custom_hil_tflm_dir", "") or None
    try:
        return tflm.tree_for(core, given, what="env %s" % env.subst("$PIOENV"))
    except HilError as exc:
        sys.stderr.write("Error: %s\n" % exc)
        env.Exit(2)


tree = tflm_tree()
# The firmware gets TFLM's API folders and defines; not the tree's partial
# CMSIS copy, which would shadow the core's own CMSIS in the nRF52 headers.
env.Append(CPPPATH=[str(d) for d in tree.api_include_dirs()], CPPDEFINES=tree.define_names())
# TFLM's objects: the tree's include folders and defines only (a new model
# or board define must not recompile TFLM), C++17 (the variant's gnu++14
# is too old for TFLM), no warnings (third-party code). The rest of the
# command line, -mcpu/-mfpu/-mfloat-abi included, is the env's, expanded
# at compile time.
own = dict(
    CPPPATH=[str(d) for d in tree.include_dirs()],
    CPPDEFINES=tree.define_names(),
    CPPFLAGS=["-w"],
    CXXFLAGS=list(tflm.CXX_ONLY_FLAGS),
)
objects = [
    env.Object(os.path.join("$BUILD_DIR", "tflm", str(src.relative_to(tree.root).with_suffix(".o"))), str(src), **own)
    for src in tree.sources()
]
env.Prepend(LIBS=[env.StaticLibrary(os.path.join("$BUILD_DIR", "tflm", "tflm"), objects)])
env.Replace(HIL_TFLM_DIR=str(tree.root))
