"""`hil convert`: Keras -> INT8 .tflite (float32 I/O), validated against Keras."""

from __future__ import annotations

import argparse

from rich.markup import escape

from harness import console
from harness.cli._common import (
    add_option,
    finite_float,
    gate_verdict,
    nonnegative_finite_float,
    nonnegative_int,
    positive_int,
    subcommand,
)
from harness.convert import convert

EPILOG = """\
examples:
  # INT8 weights and activations, float32 I/O, per-channel (the default)
  hil convert --checkpoint_path out/gesture.keras --data_path_train out/gesture_data

  # config inferred as <stem>_model_config.json; output <stem>_quantized.tflite
  hil convert --checkpoint-path out/audio.keras --data-path-train out/audio_data \\
      --per-tensor --batch-validate 5 --report-json out/audio_report.json

  # no training data at hand: INT8 weights, float activations
  hil convert --checkpoint_path model.keras --quantization dynamic

  # fully-integer I/O for sketches that feed int8 (scale/zero point are recorded)
  hil convert --checkpoint_path model.keras --data_path_train data --io int8

  # build a bundled example first
  python -m harness.examples gesture --out out

outputs:
  <out>.tflite                      the quantized model
  <out>_validation_data.npz         inputs, host TFLite (TFLM + LiteRT) and Keras outputs, labels, meta
  --report_json PATH                settings, sizes, metrics, skipped samples, timings (docs/convert.md)

exit codes: 0 converted and within --min_cosine_sim, 1 below it (outputs still
written, worst samples named), 2 could not run (bad model, config, data or option).
"""


def _signal_threshold(text: str) -> float:
    try:
        return nonnegative_finite_float(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"signal threshold {exc}") from None


# over 60 lines: one add_option per CLI option (the seed's whole set), a flat list on purpose.
def register(sub, common) -> None:
    p = subcommand(
        sub,
        common,
        "convert",
        help="Keras model -> validated INT8 .tflite + validation data",
        description="Convert a trained Keras model to a quantized TFLite model (INT8 inside, "
        "float32 I/O by default), compare it with the Keras model on held-out samples "
        "and write the validation data a device is later checked against.",
        epilog=EPILOG,
    )
    g = p.add_argument_group("model")
    add_option(g, "--checkpoint_path", required=True, metavar="MODEL.keras", help="trained Keras model (.keras or .h5)")
    add_option(
        g,
        "--model_config",
        metavar="JSON",
        help="model config (input shape, class names, normalization); default <stem>_model_config.json "
        "beside the model, if present",
    )
    add_option(g, "--output_path", metavar="OUT.tflite", help="default <stem>_quantized.tflite beside the model")
    g = p.add_argument_group("quantization")
    add_option(
        g,
        "--quantization",
        choices=("ptq", "dynamic"),
        default="ptq",
        help="ptq: INT8 weights and activations, calibrated on data (default); "
        "dynamic: INT8 weights, float activations, no data needed",
    )
    add_option(
        g,
        "--per_tensor",
        action="store_true",
        help="one scale per tensor instead of per output channel (only if a toolchain rejects per-channel)",
    )
    add_option(
        g,
        "--io",
        choices=("float32", "int8"),
        default="float32",
        help="model input/output type (default float32; int8 only for fully-integer pipelines)",
    )
    g = p.add_argument_group("data")
    add_option(
        g,
        "--data_path_train",
        metavar="PATH",
        help="training data: class folders of .npy, an .npz (x, y) or X.npy + y.npy; "
        "default: the config's training_data.path",
    )
    add_option(
        g, "--num_samples", type=positive_int, default=1024, metavar="N", help="calibration samples (default 1024)"
    )
    add_option(
        g,
        "--validate_samples",
        type=positive_int,
        default=256,
        metavar="N",
        help="held-out validation samples, never used for calibration (default 256)",
    )
    add_option(
        g,
        "--signal_threshold",
        type=_signal_threshold,
        default=0.05,
        metavar="F",
        help="skip near-silent samples whose level is below F x the median level (default 0.05; 0 keeps all)",
    )
    add_option(
        g,
        "--min_class_samples",
        type=positive_int,
        default=2,
        metavar="N",
        help="fail when a class has fewer usable samples (default 2)",
    )
    add_option(g, "--seed", type=nonnegative_int, default=0, help="sampling seed (default 0)")
    g = p.add_argument_group("validation and outputs")
    add_option(
        g,
        "--min_cosine_sim",
        type=finite_float,
        default=0.95,
        metavar="F",
        help="fail (exit 1) when the mean cosine similarity Keras vs TFLite is below F (default 0.95)",
    )
    add_option(
        g,
        "--batch_validate",
        type=positive_int,
        default=None,
        metavar="N",
        help="validate N times with different seeds and draws; the worst round decides",
    )
    add_option(g, "--export_onnx", action="store_true", help="also write <out>.onnx (needs tinyhil[onnx])")
    add_option(g, "--report_json", metavar="PATH", help="write the JSON conversion report here")
    add_option(g, "--board", metavar="ID", help="an STM32N6 board: warn per layer whose channels the NPU cannot take")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with console.make_progress() as progress:
        res = convert(
            args.checkpoint_path,
            model_config=args.model_config,
            output_path=args.output_path,
            data_path_train=args.data_path_train,
            num_samples=args.num_samples,
            validate_samples=args.validate_samples,
            min_cosine_sim=args.min_cosine_sim,
            quantization=args.quantization,
            per_tensor=args.per_tensor,
            batch_validate=args.batch_validate or 0,
            export_onnx=args.export_onnx,
            report_json=args.report_json,
            seed=args.seed,
            io=args.io,
            signal_threshold=args.signal_threshold,
            min_class_samples=args.min_class_samples,
            board=args.board,
            progress=progress,
        )
    _print_summary(res)
    if not res.passed:
        _print_gate_failure(res.report)
        return gate_verdict(False)
    return gate_verdict(True)


def _print_summary(res) -> None:
    """Notes, data, sizes and the Keras-vs-TFLite figures, then the files written."""
    rep = res.report
    for note in res.notes:
        console.warn(escape(note))
    d = rep["data"]
    if d:
        console.info(
            f"data: {d['samples']} samples ({d['layout']}), {d['skipped_silent']} near-silent skipped, "
            f"{d['calibration_samples']} calibration, {d['validation_samples']} validation"
        )
    s = rep["sizes"]
    console.info(
        f"size: {s['tflite_bytes']:,} bytes (float {s['float_tflite_bytes']:,}, {s['compression_ratio']:.2f}x smaller)"
    )
    if res.float_max_abs_diff is not None:
        console.info(f"float baseline: max |Keras - float TFLite| = {res.float_max_abs_diff:.3g}")
    m = res.metrics
    if m:
        top1 = f", top-1 {m['top1_agreement']:.1%}" if m.get("top1_agreement") is not None else ""
        console.info(
            f"Keras vs {m['candidate']}: cosine mean {m['cosine_mean']:.6f} min {m['cosine_min']:.6f}, "
            f"MSE {m['mse']:.3g}, MAE {m['mae']:.3g}, Pearson r {m['pearson_r']:.5f}, "
            f"max abs {m['max_abs_error']:.3g}{top1}"
        )
        t = rep["timing_s"]
        console.detail(
            f"time: calibration {t['calibration']}s, conversion {t['conversion']}s, "
            f"validation {t['validation']}s, total {t['total']}s"
        )
    for path in (res.tflite, res.npz, res.onnx, res.report_path):
        if path is not None:
            console.out.print(str(path), soft_wrap=True)


def _print_gate_failure(rep: dict) -> None:
    g = rep["gate"]
    worst = ", ".join(
        f"{w['id']} ({w['label']}, cosine {w['cosine']:.4f})"
        if w["label"] is not None
        else f"{w['id']} (cosine {w['cosine']:.6f})"
        for w in g["worst_samples"][:5]
    )
    console.err.print(
        f"[bold red]FAIL[/bold red] cosine mean {g['value']:.6f} < --min_cosine_sim "
        f"{g['threshold']} (round {g['round']}); worst samples: {escape(worst)}",
        soft_wrap=True,
        highlight=False,
    )
