"""Build script of the hil-offline platform (SCons, run by PlatformIO).

Two kinds of targets:
- no `board`: a host program built with the system's gcc/g++ (`native`);
- a board whose manifest names a Cortex-M `build.cpu`: bare-metal firmware
  built with `arm-none-eabi-gcc` from PATH, newlib-nano + nosys, the
  board's linker script (`board_build.ldscript`).

TensorFlow Lite Micro comes from a local source tree made by TFLM's
`create_tflm_tree.py`: `HIL_TFLM_DIR` (or `custom_hil_tflm_dir`); its layout
is described by `harness.tflm` (tinyhil must be importable). It is
compiled once into `$BUILD_DIR/tflm` as a static library; SCons rebuilds
only what changed, and PlatformIO's build cache (`build_cache_dir`, set by
the harness) keeps the objects when the build folder is wiped.
`custom_hil_tflm = no` builds without TFLM (test programs).
"""

import os
import shutil
import sys

from SCons.Script import AlwaysBuild, Builder, Default, DefaultEnvironment

env = DefaultEnvironment()
platform = env.PioPlatform()


def fail(message):
    sys.stderr.write("Error: %s\n" % message)
    env.Exit(2)


def option(name, default=None):
    return env.GetProjectOption(name, default)


def truthy(value):
    return str(value).strip().lower() not in ("", "0", "no", "false", "off")


board = env.BoardConfig() if "BOARD" in env else None
cpu = board.get("build.cpu", "") if board else ""
cross = cpu.startswith("cortex-m")
prefix = option("custom_hil_toolchain_prefix", "arm-none-eabi-" if cross else "")

for tool in ("gcc", "g++"):
    if not shutil.which(prefix + tool):
        fail(
            "%s%s is not on PATH (%s) -- install it, e.g. `apt-get install %s`"
            % (
                prefix,
                tool,
                "cross compiler for " + cpu if cross else "host compiler",
                "gcc-arm-none-eabi libnewlib-arm-none-eabi" if cross else "g++",
            )
        )

env.Replace(
    AR=prefix + "ar",
    AS=prefix + "as",
    CC=prefix + "gcc",
    CXX=prefix + "g++",
    GDB=prefix + "gdb",
    OBJCOPY=prefix + "objcopy",
    RANLIB=prefix + "ranlib",
    SIZETOOL=prefix + "size",
    ARFLAGS=["rc"],
    SIZEPROGREGEXP=r"^(?:\.isr_vector|\.text|\.rodata|\.hil_model|\.ARM\.exidx|\.ARM\.extab|\.init_array|\.fini_array|\.preinit_array|\.data)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.bss|\.noinit|\.stack)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGSUFFIX=".elf" if cross else "",
)

common = ["-O2", "-g", "-Wall", "-ffunction-sections", "-fdata-sections"]
env.Append(
    ASFLAGS=["-x", "assembler-with-cpp"],
    CFLAGS=["-std=gnu11"],
    CCFLAGS=common,
    CXXFLAGS=["-std=gnu++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics"],
)

if cross:
    machine = ["-mcpu=%s" % cpu, "-mthumb"]
    fpu = board.get("build.fpu", "")
    if fpu:
        machine.append("-mfpu=%s" % fpu)
    machine.append("-mfloat-abi=%s" % board.get("build.float_abi", "hard"))
    env.Append(
        ASFLAGS=machine,
        CCFLAGS=machine,
        CXXFLAGS=["-fno-use-cxa-atexit"],
        LINKFLAGS=machine
        + [
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            "-Wl,--no-warn-rwx-segments",
            "-Wl,-Map,${BUILD_DIR}/firmware.map",
        ],
        LIBS=["m"],
    )
    if board.get("build.ldscript", ""):
        env.Replace(LDSCRIPT_PATH=board.get("build.ldscript"))
    if not env.get("LDSCRIPT_PATH"):
        fail("board %s has no linker script: set board_build.ldscript" % env.subst("$BOARD"))
    # A model too big for the image goes to external flash (harness.build
    # decides and sets HIL_MODEL_PLACEMENT): the env's second linker script.
    if os.environ.get("HIL_MODEL_PLACEMENT") == "external":
        external_ld = option("custom_hil_ldscript_external", "")
        if not external_ld:
            fail("env %s cannot hold a model in external flash (no custom_hil_ldscript_external)" % env["PIOENV"])
        env.Replace(LDSCRIPT_PATH=external_ld)
        env.Append(CPPDEFINES=["HIL_MODEL_EXTERNAL"])
    # The linker scripts INCLUDE their shared part from their own folder.
    env.Append(LIBPATH=[os.path.join("$PROJECT_DIR", os.path.dirname(env.subst("$LDSCRIPT_PATH")))])
    env.Append(
        BUILDERS=dict(
            # The external-flash model is not part of the image (it would
            # fill the gap up to 0x70100000); it gets its own file.
            ElfToBin=Builder(
                action=env.VerboseAction("$OBJCOPY -O binary -R .hil_model_ext $SOURCES $TARGET", "Building $TARGET"),
                suffix=".bin",
            ),
            ElfToExtBin=Builder(
                action=env.VerboseAction("$OBJCOPY -O binary -j .hil_model_ext $SOURCES $TARGET", "Building $TARGET"),
                suffix=".bin",
            ),
        )
    )
else:
    env.Append(LINKFLAGS=["-Wl,--gc-sections"], LIBS=["m", "pthread"])

# ------------------------------------------------------------------ TFLM tree
# What a tree is made of (include folders, defines, the sources and the
# platform seams the firmware implements itself: DebugLog as protocol
# frames, time from the board's clock) is harness.tflm's to say; this only
# turns it into a library.
tflm_dir = os.environ.get("HIL_TFLM_DIR") or option("custom_hil_tflm_dir", "")
if truthy(option("custom_hil_tflm", "yes")):
    try:
        from harness import tflm as hil_tflm
        from harness.errors import HilError
    except ImportError as exc:
        fail("tinyhil is not importable by PlatformIO's Python (%s): pip install tinyhil" % exc)
    if not tflm_dir:
        fail(
            "no TensorFlow Lite Micro tree: set HIL_TFLM_DIR=/path/to/tflm_tree "
            "(made by TFLM's create_tflm_tree.py; see docs/build.md)"
        )
    try:
        tree = hil_tflm.check_tree(tflm_dir, "HIL_TFLM_DIR", host=not cross)
    except HilError as exc:
        fail(str(exc))
    include = [str(d) for d in tree.include_dirs()]
    env.Append(CPPPATH=include, CPPDEFINES=tree.define_names())
    src_filter = tree.src_filter()
    extra = option("custom_hil_tflm_src_filter", "")
    if extra:
        src_filter.append(extra)
    tflm_env = env.Clone()
    # Only the tree's own include folders and defines: a path or a board
    # define added for the firmware (the model's sources, HIL_BOARD_ID) must
    # not change TFLM's command lines, or every new model would recompile
    # the whole library.
    tflm_env.Replace(CPPPATH=list(include), CPPDEFINES=tree.define_names())
    # TFLM is third-party code: its warnings are not ours to fix.
    tflm_env.Append(CCFLAGS=["-w"])
    tflm_lib = tflm_env.BuildLibrary(os.path.join("$BUILD_DIR", "tflm"), str(tree.root), src_filter=src_filter)
    env.Prepend(LIBS=[tflm_lib])
    env.Replace(HIL_TFLM_DIR=str(tree.root))

# ------------------------------------------------------------------ STM32CubeN6
# ST's HAL, BSP and flash component sources from the user's tree
# (HIL_STM32CUBE_N6_DIR); which files is harness.stm32cube's to say. The
# firmware's own hal_conf and BSP conf headers come from
# custom_hil_stm32cube_conf.
cube_bsp = option("custom_hil_stm32cube", "")
if cube_bsp:
    from harness import stm32cube
    from harness.errors import HilError

    try:
        cube = stm32cube.check_tree(
            os.environ.get(stm32cube.ENV_VAR) or option("custom_hil_stm32cube_dir", ""), cube_bsp
        )
    except HilError as exc:
        fail("%s -- %s" % (exc, exc.hint) if getattr(exc, "hint", "") else str(exc))
    conf_dir = os.path.join("$PROJECT_DIR", option("custom_hil_stm32cube_conf", "src"))
    # The HAL's configuration header is generated, not kept in the tree.
    hal_conf_dir = env.subst(os.path.join("$BUILD_DIR", "stm32cube_conf"))
    os.makedirs(hal_conf_dir, exist_ok=True)
    hal_conf = os.path.join(hal_conf_dir, stm32cube.HAL_CONF_NAME)
    text = stm32cube.hal_conf_header()
    if not os.path.isfile(hal_conf) or open(hal_conf).read() != text:  # unchanged: no rebuild
        with open(hal_conf, "w") as f:
            f.write(text)
    # Before the TFLM tree's folders: its CMSIS Core is another release than
    # the one ST's device headers are written against.
    env.Prepend(CPPPATH=[hal_conf_dir, conf_dir] + [str(d) for d in cube.include_dirs(cube_bsp)])
    env.Append(CPPDEFINES=list(stm32cube.DEFINES))
    cube_env = env.Clone()
    cube_env.Append(CCFLAGS=["-w"] + list(stm32cube.CFLAGS))  # ST's code: its warnings are not ours to fix
    cube_objs = [
        cube_env.Object(
            os.path.join("$BUILD_DIR", "stm32cube", os.path.splitext(str(src.relative_to(cube.root)))[0] + ".o"),
            str(src),
        )
        for src in cube.sources(cube_bsp)
    ]
    env.Prepend(LIBS=[cube_env.StaticLibrary(os.path.join("$BUILD_DIR", "stm32cube"), cube_objs)])

# ------------------------------------------------------------------ targets
target_elf = env.BuildProgram()
outputs = [target_elf]
if cross and board.get("build.binary", False):
    # A raw image for programmers that take .bin (the STM32N6 signing tool).
    outputs.append(env.ElfToBin(os.path.join("$BUILD_DIR", "${PROGNAME}"), target_elf))
    env.Depends(outputs[-1], "checkprogsize")
    if os.environ.get("HIL_MODEL_PLACEMENT") == "external":
        outputs.append(env.ElfToExtBin(os.path.join("$BUILD_DIR", "${PROGNAME}_extflash"), target_elf))

AlwaysBuild(env.Alias("size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")))
Default(outputs)
