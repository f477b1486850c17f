"""`hil codegen`: generated sources compiled for real (host g++ and
arm-none-eabi-g++), their bytes and constants checked against the model,
plus names, determinism, the arena measurement and every bad-input path."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import codegen
from harness.arena import MIN_PROBE, align_up
from harness.cli import main as hil_main
from harness.errors import ConfigError, ModelError
from harness.model import DTYPE_CODES, inspect_model

GXX = shutil.which("g++")
ARM_GXX = shutil.which("arm-none-eabi-g++")
READELF = shutil.which("arm-none-eabi-readelf")
needs_gxx = pytest.mark.skipif(not GXX, reason="needs g++ (apt install g++)")
needs_arm = pytest.mark.skipif(
    not (ARM_GXX and READELF), reason="needs arm-none-eabi-g++ (apt install gcc-arm-none-eabi)"
)


# --------------------------------------------------------------------------- models


def _convert(model, rep_shape, path: Path, int8_io: bool = False) -> Path:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def rep():
        for _ in range(16):
            yield [rng.standard_normal((1, *rep_shape)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A small dense model (float I/O, int8 inside) and a small depthwise-conv
    model (int8 I/O), plus one with a 400 KB arena for the board check."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("codegen_models")
    dense = tf.keras.Sequential(
        [
            tf.keras.Input((30,)),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(4, activation="softmax"),
        ]
    )
    dw = tf.keras.Sequential(
        [
            tf.keras.Input((16, 16, 1)),
            tf.keras.layers.DepthwiseConv2D(3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(3),
        ]
    )
    wide = tf.keras.Sequential([tf.keras.Input((100_000,)), tf.keras.layers.ReLU()])
    return {
        "dense": _convert(dense, (30,), d / "dense_model_quantized.tflite"),
        "dwconv": _convert(dw, (16, 16, 1), d / "dwconv_int8.tflite", int8_io=True),
        "wide": _convert(wide, (100_000,), d / "wide.tflite"),
    }


@pytest.fixture(scope="session")
def example_models(request, tiny_models) -> dict[str, Path]:
    """The two shared example models when tests/conftest.py provides them
    (gesture_model, audio_model), else the tiny ones built here."""
    out = {}
    for fx in ("gesture_model", "audio_model"):
        try:
            ex = request.getfixturevalue(fx)
            out[fx] = Path(ex.tflite)
        except pytest.FixtureLookupError:
            pass
    if not out:
        out = {"dense": tiny_models["dense"], "dwconv": tiny_models["dwconv"]}
    return out


@pytest.fixture(scope="session")
def generated(tmp_path_factory, example_models) -> dict[tuple[str, str], codegen.CodegenResult]:
    """Every example model generated in both formats (arena measured once per model)."""
    res = {}
    for key, path in example_models.items():
        for fmt in codegen.FORMATS:
            out = tmp_path_factory.mktemp(f"gen_{key}_{fmt}")
            arena = None if fmt == "array" else res[(key, "array")].arena.measured
            res[(key, fmt)] = codegen.generate(path, out, fmt=fmt, arena_bytes=arena)
    return res


def _patched(model: Path, out: Path, mutate) -> Path:
    """A copy of `model` with its operator codes changed by `mutate`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(bytearray(model.read_bytes()), 0)
    mutate(m, s)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    out.write_bytes(bytes(b.Output()))
    return out


# --------------------------------------------------------------------------- object checks


def check_model_object(
    obj: Path, symbol: str, size: int, align: int = 16, readelf: str = READELF or "readelf"
) -> list[str]:
    """Problems with `symbol` in an ELF object: must be a GLOBAL object of
    `size` bytes in a read-only .rodata* section, `align`-byte aligned."""
    syms = subprocess.run([readelf, "-sW", str(obj)], capture_output=True, text=True, check=True).stdout
    secs = subprocess.run([readelf, "-SW", str(obj)], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in secs.splitlines():
        m = re.match(
            r"\s*\[\s*(\d+)\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s+"
            r"([A-Za-z]*)\s+\d+\s+\d+\s+(\d+)",
            line,
        )
        if m:
            sections[int(m.group(1))] = (m.group(2), m.group(3), int(m.group(4)))
    problems = []
    internal = f"_ZL{len(symbol)}{symbol}"  # how C++ names a namespace-scope static
    for line in syms.splitlines():
        f = line.split()
        if len(f) >= 8 and f[7] == internal:
            return [f"{symbol} has internal linkage ({f[4]} {internal})"]
        if len(f) >= 8 and f[7] == symbol:
            value, sym_size, typ, bind, ndx = int(f[1], 16), int(f[2]), f[3], f[4], f[6]
            if bind != "GLOBAL":
                problems.append(f"{symbol} is {bind}, not GLOBAL (no external linkage)")
            if typ != "OBJECT":
                problems.append(f"{symbol} is {typ}, not OBJECT")
            if sym_size != size:
                problems.append(f"{symbol} has size {sym_size}, not {size}")
            if not ndx.isdigit():
                problems.append(f"{symbol} is not defined here (section {ndx})")
                return problems
            name, flags, sec_align = sections[int(ndx)]
            if not name.startswith(".rodata"):
                problems.append(f"{symbol} is in {name}, not .rodata*")
            if "W" in flags:
                problems.append(f"{symbol} is in writable section {name} (flags {flags})")
            if sec_align < align or value % align:
                problems.append(f"{symbol} is aligned to {sec_align} (offset {value}), not {align}")
            return problems
    return [f"{symbol} not in the symbol table (internal linkage optimized away, or never defined)"]


def _compile_arm(src_dir: Path, cc: Path, obj: Path, cpu: str) -> None:
    subprocess.run(
        [
            ARM_GXX,
            f"-mcpu={cpu}",
            "-mthumb",
            "-O2",
            "-std=c++17",
            "-fdata-sections",
            "-ffunction-sections",
            "-Wall",
            "-Werror",
            "-I",
            str(src_dir),
            "-c",
            str(cc),
            "-o",
            str(obj),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


# --------------------------------------------------------------------------- host compile

HOST_MAIN = r"""
#include <cstdio>
#include "model_data.h"
static void Spec(const char* kind, const HilTensorSpec& t) {
  std::fprintf(stderr, "%s %u %u", kind, t.dtype, t.ndims);
  for (int i = 0; i < kHilMaxDims; ++i) std::fprintf(stderr, " %d", (int)t.dims[i]);
  std::fprintf(stderr, " %.9g %d %u\n", t.scale, (int)t.zero_point, (unsigned)t.nbytes);
}
int main() {
  std::fwrite(kHilModelData, 1, @LEN@, stdout);
  std::fprintf(stderr, "len %u %u\nsha ", @LEN@, kHilModelSize);
  for (int i = 0; i < 32; ++i) std::fprintf(stderr, "%02x", kHilModelSha256[i]);
  std::fprintf(stderr, "\nhex %s\narena %u %u\naligned %d\n", kHilModelSha256Hex, kHilArenaSize,
               kHilArenaMeasuredBytes, (int)(reinterpret_cast<unsigned long>(kHilModelData) % 16 == 0));
  for (int i = 0; i < kHilNumInputs; ++i) Spec("in", kHilInputs[i]);
  for (int i = 0; i < kHilNumOutputs; ++i) Spec("out", kHilOutputs[i]);
  return 0;
}
"""


HOST_COMPILERS = [c for c in ("g++", "clang++") if shutil.which(c)]


@pytest.mark.skipif(not HOST_COMPILERS, reason="needs g++ or clang++ (apt install g++)")
@pytest.mark.parametrize("cxx", HOST_COMPILERS or ["g++"])
@pytest.mark.parametrize("fmt", codegen.FORMATS)
def test_host_program_reproduces_the_model(generated, example_models, tmp_path, fmt, cxx):
    for key, model in example_models.items():
        res = generated[(key, fmt)]
        main = tmp_path / f"main_{key}.cc"
        main.write_text(HOST_MAIN.replace("@LEN@", f"{res.data_symbol}_len"))
        exe = tmp_path / f"prog_{key}"
        # compiled from another directory: the incbin path must not depend on the cwd
        subprocess.run(
            [
                cxx,
                "-std=c++11",
                "-O2",
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-I",
                str(res.out_dir),
                str(main),
                str(res.out_dir / "model_data.cc"),
                "-o",
                str(exe),
            ],
            check=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        run = subprocess.run([str(exe)], capture_output=True, check=True)
        data = model.read_bytes()
        assert run.stdout == data
        err = run.stderr.decode().splitlines()
        sha = hashlib.sha256(data).hexdigest()
        assert err[0] == f"len {len(data)} {len(data)}"
        assert err[1] == f"sha {sha}" and err[2] == f"hex {sha}"
        assert err[3] == f"arena {res.arena.recommended} {res.arena.measured}"
        assert err[4] == "aligned 1"
        info = inspect_model(model)
        specs = [ln.split() for ln in err[5:]]
        assert len(specs) == len(info.inputs) + len(info.outputs)
        for spec, t in zip(specs, [*info.inputs, *info.outputs]):
            dims = [int(x) for x in spec[3 : 3 + 6]]
            assert int(spec[1]) == DTYPE_CODES[t.dtype] and int(spec[2]) == len(t.shape)
            assert dims == list(t.shape) + [0] * (6 - len(t.shape))
            assert np.float32(float(spec[9])) == np.float32(t.scale)
            assert int(spec[10]) == t.zero_point and int(spec[11]) == t.nbytes


# --------------------------------------------------------------------------- target compile


@needs_arm
@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m55"])
@pytest.mark.parametrize("fmt", codegen.FORMATS)
def test_target_object_has_model_in_flash(generated, tmp_path, cpu, fmt):
    for (key, f), res in generated.items():
        if f != fmt:
            continue
        obj = tmp_path / f"{key}.o"
        _compile_arm(res.out_dir, res.out_dir / "model_data.cc", obj, cpu)
        assert check_model_object(obj, res.data_symbol, res.model.size) == []
        assert check_model_object(obj, f"{res.data_symbol}_len", 4, align=4) == []


@needs_arm
def test_target_check_catches_missing_const_and_internal_linkage(generated, tmp_path):
    res = next(r for (k, f), r in generated.items() if f == "array")
    cc = (res.out_dir / "model_data.cc").read_text()
    h = (res.out_dir / "model_data.h").read_text()
    decl = f"const unsigned char {res.data_symbol}["
    assert decl in cc and decl in h

    # 1. the seed's pitfall: no const -> the array lands in writable RAM (.data)
    no_const = tmp_path / "no_const"
    no_const.mkdir()
    (no_const / "model_data.h").write_text(h.replace(decl, decl.replace("const ", "")))
    (no_const / "model_data.cc").write_text(cc.replace(decl, decl.replace("const ", "")))
    _compile_arm(no_const, no_const / "model_data.cc", tmp_path / "nc.o", "cortex-m4")
    problems = check_model_object(tmp_path / "nc.o", res.data_symbol, res.model.size)
    assert any("writable" in p or "not .rodata" in p for p in problems), problems

    # 2. const without the header: internal linkage, dropped by the optimizer
    internal = tmp_path / "internal"
    internal.mkdir()
    (internal / "model_data.cc").write_text(cc.replace('#include "model_data.h"', ""))
    _compile_arm(internal, internal / "model_data.cc", tmp_path / "in.o", "cortex-m4")
    assert check_model_object(tmp_path / "in.o", res.data_symbol, res.model.size)

    # 3. explicitly static: kept (used), but LOCAL
    static = tmp_path / "static"
    static.mkdir()
    (static / "model_data.cc").write_text(
        cc.replace('#include "model_data.h"', "").replace(f"alignas(16) {decl}", f"alignas(16) static {decl}")
        + f"const unsigned char* keep() {{ return {res.data_symbol}; }}\n"
    )
    _compile_arm(static, static / "model_data.cc", tmp_path / "st.o", "cortex-m4")
    problems = check_model_object(tmp_path / "st.o", res.data_symbol, res.model.size)
    assert any("internal linkage" in p for p in problems), problems


@needs_arm
def test_incbin_fails_the_build_when_the_copy_changed(tiny_models, tmp_path):
    res = codegen.generate(tiny_models["dense"], tmp_path / "g", fmt="incbin", arena_bytes=4096)
    copy = tmp_path / "g" / codegen.INCBIN_COPY
    copy.write_bytes(copy.read_bytes() + b"\0" * 16)
    proc = subprocess.run(
        [
            ARM_GXX,
            "-mcpu=cortex-m4",
            "-O2",
            "-I",
            str(res.out_dir),
            "-c",
            str(res.out_dir / "model_data.cc"),
            "-o",
            str(tmp_path / "x.o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "changed since hil codegen" in proc.stderr


# --------------------------------------------------------------------------- op resolver


def _op_names(ops_h: str) -> list[str]:
    block = re.search(r"kHilOpNames\[kHilNumOps\] = \{(.*?)\};", ops_h, re.S).group(1)
    return re.findall(r'"([A-Za-z0-9_]+)"', block)


def test_op_resolver_lists_exactly_the_models_ops(generated, example_models):
    table = codegen.load_op_table()
    for key, model in example_models.items():
        info = inspect_model(model)
        ops_h = (generated[(key, "array")].out_dir / "model_ops.h").read_text()
        assert _op_names(ops_h) == sorted(info.builtin_ops + info.custom_ops)
        calls = re.findall(r"resolver\.(Add\w+)\(\)", ops_h)
        assert calls == [table["builtin"][op] for op in sorted(info.builtin_ops)]
        assert f"constexpr int kHilNumOps = {len(calls)};" in ops_h


def _tflm_dir() -> Path:
    d = os.environ.get("HIL_TFLM_DIR")
    if not d or not (Path(d) / "tensorflow/lite/micro/micro_mutable_op_resolver.h").is_file():
        pytest.skip(
            "set HIL_TFLM_DIR=/path/to/tflm_tree (a create_tflm_tree.py output, "
            "see docs/build.md, 'Making the trees') to compile the op resolver against TFLM"
        )
    return Path(d)


@pytest.mark.tflm
def test_op_table_matches_tflm_header():
    header = (_tflm_dir() / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    table = codegen.load_op_table()
    for op, call in {**table["builtin"], **table["custom"]}.items():
        m = re.search(rf"TfLiteStatus {call}\((.*?)\{{(.*?)\n  \}}", header, re.S)
        assert m, f"{call} not in the TFLM header"
        assert (f"BuiltinOperator_{op}," in m.group(2)) or (f'"{op}"' in m.group(2)), (op, call)


@pytest.mark.tflm
@needs_gxx
def test_op_resolver_compiles_against_tflm(generated, tmp_path):
    tree = _tflm_dir()
    inc = [tree, tree / "third_party/flatbuffers/include", tree / "third_party/gemmlowp", tree / "third_party/ruy"]
    for (key, fmt), res in generated.items():
        if fmt != "array":
            continue
        src = tmp_path / f"use_{key}.cc"
        src.write_text(
            '#include "model_data.h"\n#include "model_ops.h"\n'
            "HilOpResolver resolver;\n"
            "int Setup() { return HilRegisterOps(resolver) == kTfLiteOk ? 0 : 1; }\n"
            'static_assert(kHilNumOps > 0, "ops");\n'
        )
        cmd = [GXX, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unused-parameter", "-I", str(res.out_dir)]
        cmd += [f"-I{p}" for p in inc] + ["-c", str(src), "-o", str(tmp_path / f"{key}.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if ARM_GXX:
            cmd[0] = ARM_GXX
            cmd[1:1] = ["-mcpu=cortex-m55", "-mthumb"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-3000:]


TFLM_MAIN = r"""
#include <cstdio>
#include <cstring>
#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

alignas(16) static uint8_t arena[kHilArenaSize];

static int Code(TfLiteType t) {  // TFLM type -> kHilDtype...
  switch (t) {
    case kTfLiteFloat32: return kHilDtypeFloat32;
    case kTfLiteInt8: return kHilDtypeInt8;
    case kTfLiteUInt8: return kHilDtypeUint8;
    case kTfLiteInt16: return kHilDtypeInt16;
    case kTfLiteInt32: return kHilDtypeInt32;
    default: return -1;
  }
}

static bool Same(const TfLiteTensor* t, const HilTensorSpec& s) {
  if (Code(t->type) != s.dtype || t->dims->size != s.ndims || t->bytes != s.nbytes) return false;
  for (int i = 0; i < s.ndims; ++i) if (t->dims->data[i] != s.dims[i]) return false;
  return t->params.scale == s.scale && t->params.zero_point == s.zero_point;
}

int main(int argc, char** argv) {
  size_t size = argc > 1 ? static_cast<size_t>(std::atol(argv[1])) : kHilArenaSize;
  static HilOpResolver resolver;
  if (HilRegisterOps(resolver) != kTfLiteOk) return 2;
  tflite::MicroInterpreter interp(tflite::GetModel(kHilModelData), resolver, arena, size);
  if (interp.AllocateTensors() != kTfLiteOk) return 3;
  if (interp.inputs_size() != kHilNumInputs || interp.outputs_size() != kHilNumOutputs) return 4;
  for (int i = 0; i < kHilNumInputs; ++i) {
    if (!Same(interp.input(i), kHilInputs[i])) return 5;
    std::memset(interp.input(i)->data.raw, 0, kHilInputs[i].nbytes);
  }
  for (int i = 0; i < kHilNumOutputs; ++i) if (!Same(interp.output(i), kHilOutputs[i])) return 6;
  if (interp.Invoke() != kTfLiteOk) return 7;
  std::printf("%zu\n", interp.arena_used_bytes());
  return 0;
}
"""


@pytest.mark.tflm
@needs_gxx
def test_generated_model_runs_in_tflm_with_the_recommended_arena(generated, tmp_path):
    """Linked with TFLM (C++), the generated model, resolver, tensor specs and
    arena size work together: AllocateTensors, specs equal TFLM's tensors,
    Invoke; TFLM's own arena use stays within the measured size."""
    tree = _tflm_dir()
    lib = os.environ.get("HIL_TFLM_HOST_LIB")
    if not lib or not Path(lib).is_file():
        pytest.skip(
            "set HIL_TFLM_HOST_LIB=/path/libtflm.a (TFLM built for the host from HIL_TFLM_DIR, "
            "with -DTF_LITE_STATIC_MEMORY) to run the generated model in TFLM"
        )
    inc = [tree, tree / "third_party/flatbuffers/include", tree / "third_party/gemmlowp", tree / "third_party/ruy"]
    for (key, fmt), res in generated.items():
        src = tmp_path / "run.cc"
        src.write_text(TFLM_MAIN)
        exe = tmp_path / f"run_{key}_{fmt}"
        cmd = [
            GXX,
            "-std=c++17",
            "-O1",
            "-fno-exceptions",
            "-fno-rtti",
            "-DTF_LITE_STATIC_MEMORY",
            "-I",
            str(res.out_dir),
        ]
        cmd += [f"-I{p}" for p in inc] + [str(src), str(res.out_dir / "model_data.cc"), lib, "-o", str(exe)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run = subprocess.run([str(exe)], capture_output=True, text=True)
        assert run.returncode == 0, (key, fmt, run.returncode, run.stderr[-2000:])
        assert int(run.stdout) <= res.arena.measured <= res.arena.recommended


# --------------------------------------------------------------------------- arena


def test_arena_is_the_smallest_tflm_accepts(generated, example_models):
    from tflite_micro.python.tflite_micro import runtime as tflm

    for key, model in example_models.items():
        res = generated[(key, "array")]
        data = model.read_bytes()
        m = res.arena.measured
        assert m % 16 == 0 and m >= MIN_PROBE
        ip = tflm.Interpreter.from_bytes(data, arena_size=m)
        ip.invoke()
        if m > MIN_PROBE:
            with pytest.raises(Exception):
                tflm.Interpreter.from_bytes(data, arena_size=m - 16)
        assert res.arena.recommended == align_up(m * 1.2)


def test_arena_search_uses_tflms_own_figure_and_checks_it(example_models, monkeypatch):
    """TFLM's reported total is taken only once it is proven smallest; a
    wrong figure falls back to the full search with the same answer."""
    from harness import arena

    data = next(iter(example_models.values())).read_bytes()
    fast = arena._search(data)
    assert fast["probes"] <= 4  # the reported total, checked: 3 probes + the report
    for wrong in (fast["bytes"] - 256, fast["bytes"] + 256, None):
        monkeypatch.setattr(arena, "_reported_total", lambda d, w=wrong: w)
        slow = arena._search(data)
        assert slow["bytes"] == fast["bytes"] and slow["probes"] > 4


def test_arena_margin_parsing():
    assert codegen.parse_margin("20%") == (0.2, 0)
    assert codegen.parse_margin("2048") == (0.0, 2048)
    assert codegen.parse_margin("10% + 512") == (pytest.approx(0.1), 512)
    for bad in ("lots", "-5%", "1.5"):
        with pytest.raises(ConfigError):
            codegen.parse_margin(bad)


# --------------------------------------------------------------------------- names and literals


@pytest.mark.parametrize(
    "text,ident",
    [
        ("my-model v2", "my_model_v2"),
        ("2024 kws", "m_2024_kws"),
        ("int", "m_int"),
        ("class", "m_class"),
        ("Gesture", "gesture"),
        ("__x__", "x"),
        ("a..b", "a_b"),
        ("", "model"),
        ("Ünïcode", "unicode"),
    ],
)
def test_sanitize_identifier(text, ident):
    assert codegen.sanitize_identifier(text) == ident
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", ident) and "__" not in f"g_{ident}_model_data"


def test_default_name_drops_pipeline_suffixes():
    assert codegen.default_name(Path("gesture_model_quantized.tflite")) == "gesture"
    assert codegen.default_name(Path("my-model v2.tflite")) == "my_model_v2"
    assert codegen.default_name(Path("model.tflite")) == "model"


def test_name_option_and_odd_file_names(tiny_models, tmp_path):
    odd = tmp_path / "my-model v2.tflite"
    shutil.copy(tiny_models["dense"], odd)
    res = codegen.generate(odd, tmp_path / "a", arena_bytes=2048)
    assert res.data_symbol == "g_my_model_v2_model_data"
    res = codegen.generate(odd, tmp_path / "b", name="3d-class", arena_bytes=2048)
    assert res.data_symbol == "g_m_3d_class_model_data"
    text = (tmp_path / "b" / "model_data.h").read_text()
    assert "alignas(16) extern const unsigned char g_m_3d_class_model_data[];" in text
    assert text.splitlines()[0].startswith("// generated from my-model v2.tflite sha256 ")


@pytest.mark.parametrize("x", [0.0, 1.0, 0.00390625, 1e-5, 3.4028235e38, -0.1234567, 2.5e-12, 1e-45])
def test_c_float_round_trips_float32(x):
    lit = codegen.c_float(x)
    assert lit.endswith("f") and re.fullmatch(r"-?\d+\.\d+(e[-+]?\d+)?f|-?\d+(\.\d+)?e[-+]?\d+f", lit), lit
    assert np.float32(float(lit[:-1])) == np.float32(x)


def test_hex_body_matches_xxd(tmp_path):
    data = bytes(range(256)) * 3 + b"\x07"
    body = codegen.hex_body(data)
    assert bytes(int(t, 16) for t in re.findall(r"0x[0-9a-f]{2}", body)) == data
    if shutil.which("xxd"):
        (tmp_path / "m").write_bytes(data)
        xxd = subprocess.run(["xxd", "-i", "m"], cwd=tmp_path, capture_output=True, text=True).stdout
        assert body == xxd.split("{\n", 1)[1].split("\n};", 1)[0]


# --------------------------------------------------------------------------- determinism


def test_unchanged_model_is_not_rewritten(tiny_models, tmp_path):
    out = tmp_path / "gen"
    first = codegen.generate(tiny_models["dense"], out, arena_bytes=2048)
    assert all(first.written.values())
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    os.utime(out / "model_data.cc", ns=(1, 1))  # an old mtime: a rewrite would be visible
    before["model_data.cc"] = (1, before["model_data.cc"][1])
    again = codegen.generate(tiny_models["dense"], out, arena_bytes=2048)
    assert not any(again.written.values())
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    # same inputs elsewhere: byte-identical output
    codegen.generate(tiny_models["dense"], tmp_path / "other", arena_bytes=2048)
    for name in codegen.FILES:
        assert (tmp_path / "other" / name).read_bytes() == before[name][1]


def test_every_file_starts_with_the_banner(generated, example_models):
    for (key, _fmt), res in generated.items():
        sha = hashlib.sha256(example_models[key].read_bytes()).hexdigest()
        for name in codegen.FILES:
            first = (res.out_dir / name).read_text().splitlines()[0]
            assert re.fullmatch(
                rf"// generated from {re.escape(example_models[key].name)} sha256 {sha} "
                r"by tinyhil \S+; do not edit",
                first,
            )


# --------------------------------------------------------------------------- model config


def test_normalization_from_model_config(tiny_models, tmp_path):
    model = tmp_path / "gesture_model_quantized.tflite"
    shutil.copy(tiny_models["dense"], model)
    mean = [float(v) for v in np.linspace(-1, 1, 30)]
    (tmp_path / "gesture_model_model_config.json").write_text(
        json.dumps({"normalization": {"mean": mean, "std": 2.5}, "other": 1})
    )
    res = codegen.generate(model, tmp_path / "g", arena_bytes=2048)  # found beside the model
    assert res.normalization and res.config_path.name == "gesture_model_model_config.json"
    h = (tmp_path / "g" / "model_data.h").read_text()
    assert "constexpr bool kHilHasNormalization = true;" in h
    assert "constexpr int kHilNormalizationSize = 30;" in h
    got = re.search(r"kHilInputMean\[kHilNormalizationSize\] = \{(.*?)\};", h).group(1)
    assert [np.float32(float(v.strip()[:-1])) for v in got.split(",")] == [np.float32(v) for v in mean]
    assert h.count("2.5f") == 30 and res.warnings == []
    (tmp_path / "gesture_model_model_config.json").write_text(json.dumps({"mean": [1, 2, 3], "std": 1}))
    res = codegen.generate(model, tmp_path / "g", arena_bytes=2048)
    assert len(res.warnings) == 1 and "3 mean/std values" in res.warnings[0]


@pytest.mark.parametrize(
    "cfg,expect",
    [
        ({"mean": 1, "std": [2, 4]}, ([1.0, 1.0], [2.0, 4.0])),
        ({"preprocessing": {"normalization": {"mean": [[1, 2]], "stddev": [[3, 4]]}}}, ([1.0, 2.0], [3.0, 4.0])),
        ({"input_mean": 0.5, "input_std": 0.25}, ([0.5], [0.25])),
        ({"labels": ["a", "b"]}, None),
    ],
)
def test_read_normalization_variants(tmp_path, cfg, expect):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    assert codegen.read_normalization(p) == expect


@pytest.mark.parametrize(
    "text", ["not json", json.dumps({"mean": [1, 2, 3], "std": [1, 2]}), json.dumps({"mean": 0, "std": 0})]
)
def test_bad_model_config(tmp_path, text):
    p = tmp_path / "c.json"
    p.write_text(text)
    with pytest.raises(ConfigError):
        codegen.read_normalization(p)


# --------------------------------------------------------------------------- board


def test_board_check_limits():
    from harness.boards import load_board

    b = load_board("nano33ble")
    usage, warnings = codegen.check_board("nano33ble", 1000, 1000)
    assert warnings == [] and usage["flash_fraction"] == 1000 / b.flash_bytes
    _, warnings = codegen.check_board("nano33ble", int(b.flash_bytes * 0.95), 1000)
    assert len(warnings) == 1 and "flash" in warnings[0]
    _, warnings = codegen.check_board("nano33ble", 1000, int(b.ram_bytes * 0.95))
    assert len(warnings) == 1 and "RAM" in warnings[0]
    with pytest.raises(ConfigError, match="flash"):
        codegen.check_board("nano33ble", b.flash_bytes + 1, 1000)
    with pytest.raises(ConfigError, match="RAM"):
        codegen.check_board("nano33ble", 1000, b.ram_bytes + 1)


# --------------------------------------------------------------------------- CLI and bad input


def _cli(capsys, *args) -> tuple[int, str]:
    rc = hil_main(["codegen", *map(str, args)])
    return rc, capsys.readouterr().err


def test_cli_generates_and_reports(tiny_models, tmp_path, capsys):
    rc, err = _cli(
        capsys, "--model", tiny_models["dwconv"], "--out", tmp_path / "g", "--board", "nano33ble", "--arena-margin", "0"
    )
    assert rc == 0, err
    assert "g_dwconv_model_data" in err and "recommended" in err
    h = (tmp_path / "g" / "model_data.h").read_text()
    measured = int(re.search(r"kHilArenaMeasuredBytes = (\d+)u", h).group(1))
    assert f"kHilArenaSize = {measured}u" in h  # margin 0
    rc, err = _cli(
        capsys, "--model", tiny_models["dwconv"], "--out", tmp_path / "g", "--board", "nano33ble", "--arena_margin", "0"
    )
    assert rc == 0 and "nothing rewritten" in err


def _assert_untouched(out: Path, before: dict):
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before


@pytest.fixture()
def existing(tiny_models, tmp_path):
    out = tmp_path / "gen"
    codegen.generate(tiny_models["dense"], out, arena_bytes=2048)
    return out, {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}


def _bad_models(tiny_models, d: Path) -> dict[str, tuple[Path, str]]:
    good = tiny_models["dense"].read_bytes()
    (d / "empty.tflite").write_bytes(b"")
    (d / "text.tflite").write_text("this is not a model\n" * 20)
    (d / "keras.tflite").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (d / "half.tflite").write_bytes(good[: len(good) // 2])
    (d / "short.tflite").write_bytes(good[:-200])

    def unsupported(m, s):
        m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = s.BuiltinOperator.RANGE

    def custom(m, s):
        m.operatorCodes[1].builtinCode = m.operatorCodes[1].deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
        m.operatorCodes[1].customCode = b"MySecretOp"

    return {
        "empty": (d / "empty.tflite", "empty"),
        "text": (d / "text.tflite", "not a TFLite flatbuffer"),
        "keras": (d / "keras.tflite", "not a TFLite flatbuffer"),
        "half": (d / "half.tflite", "truncated or corrupt"),
        "short": (d / "short.tflite", "truncated or corrupt"),
        "missing": (d / "nope.tflite", "does not exist"),
        "unsupported": (_patched(tiny_models["dense"], d / "range.tflite", unsupported), "RANGE"),
        "custom": (_patched(tiny_models["dense"], d / "custom.tflite", custom), "custom 'MySecretOp'"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "keras", "half", "short", "missing", "unsupported", "custom"])
def test_bad_model_is_one_line_exit_2_and_leaves_files(tiny_models, existing, tmp_path, capsys, case):
    out, before = existing
    path, msg = _bad_models(tiny_models, tmp_path)[case]
    rc, err = _cli(capsys, "--model", path, "--out", out)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error:") and msg in err, err
    _assert_untouched(out, before)


def test_every_truncation_is_rejected_without_a_crash(tiny_models, tmp_path):
    """Truncated at many points: always a ModelError from the parser or the
    buffer check, never a crash in TFLM (which would take pytest with it)."""
    good = tiny_models["dwconv"].read_bytes()
    for cut in range(8, len(good), max(1, len(good) // 97)):
        p = tmp_path / "t.tflite"
        p.write_bytes(good[:cut])
        try:
            codegen.load_model(p)
        except ModelError:
            continue
        # it parsed: TFLM must then cope (in the child process, crashes become errors)
        with pytest.raises(ModelError):
            codegen.generate(p, tmp_path / "g", fmt="array")


def test_model_too_big_for_the_board(tiny_models, existing, capsys):
    out, before = existing
    rc, err = _cli(capsys, "--model", tiny_models["wide"], "--out", out, "--board", "nano33ble")
    assert rc == 2 and "RAM" in err and err.count("\n") == 1, err
    _assert_untouched(out, before)


def test_unwritable_output(tiny_models, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, err = _cli(capsys, "--model", tiny_models["dense"], "--out", blocker)
    assert rc == 2 and "is a file" in err
    rc, err = _cli(capsys, "--model", tiny_models["dense"], "--out", blocker / "sub")
    assert rc == 2 and "cannot write" in err and err.count("\n") == 1


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder_keeps_files(existing, tiny_models, capsys):
    out, before = existing
    os.chmod(out, 0o500)
    try:
        rc, err = _cli(capsys, "--model", tiny_models["dwconv"], "--out", out)
    finally:
        os.chmod(out, 0o700)
    assert rc == 2 and "cannot write" in err
    _assert_untouched(out, before)


def test_bad_options(tiny_models, tmp_path, capsys):
    rc, err = _cli(capsys, "--model", tiny_models["dense"], "--out", tmp_path, "--board", "no_such_board")
    assert rc == 2 and "unknown board" in err
    rc, err = _cli(capsys, "--model", tiny_models["dense"], "--out", tmp_path, "--arena-margin", "much")
    assert rc == 2 and "arena margin" in err
    rc, err = _cli(capsys, "--model", tiny_models["dense"], "--out", tmp_path, "--model_config", tmp_path / "x.json")
    assert rc == 2 and "does not exist" in err


def test_dtype_codes_match_protocol_doc():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    for name, code in DTYPE_CODES.items():
        assert f"{code} {name}" in doc


@needs_gxx
def test_hostile_file_and_folder_names_still_compile(tiny_models, tmp_path):
    """Quotes, backslashes, spaces and non-ASCII in the model's file name and
    the output folder end up in comments, strings and the .incbin path."""
    odd_dir = tmp_path / 'dir "q" \\ é ?? x'
    odd_dir.mkdir()
    model = odd_dir / 'my "model" \\ v2 é.tflite'
    shutil.copy(tiny_models["dense"], model)
    for fmt in codegen.FORMATS:
        res = codegen.generate(model, odd_dir / f"out {fmt}", fmt=fmt, arena_bytes=2048)
        main = tmp_path / "main.cc"
        main.write_text(HOST_MAIN.replace("@LEN@", f"{res.data_symbol}_len"))
        exe = tmp_path / f"prog_{fmt}"
        subprocess.run(
            [
                GXX,
                "-std=c++17",
                "-Wall",
                "-Werror",
                "-I",
                str(res.out_dir),
                str(main),
                str(res.out_dir / "model_data.cc"),
                "-o",
                str(exe),
            ],
            check=True,
            capture_output=True,
        )
        assert subprocess.run([str(exe)], capture_output=True, check=True).stdout == model.read_bytes()


def test_a_failed_write_replaces_no_file(existing, tiny_models, monkeypatch, capsys):
    """All files change (another model), the last write fails: none of the
    earlier ones may have been replaced, and no temporary file stays."""
    out, before = existing
    real = Path.write_bytes

    def failing(self, data):
        if "model_ops.h" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    rc, err = _cli(capsys, "--model", tiny_models["dwconv"], "--out", out)
    assert rc == 2 and "No space left" in err
    _assert_untouched(out, before)
