from __future__ import annotations

import subprocess
import sys

from crosslocate.pipelines.cli import build_parser, main
from crosslocate.pipelines.commands import COMMANDS


def test_help_lists_every_command(capsys):
    parser = build_parser()
    text = parser.format_help()
    for name in COMMANDS:
        assert name in text


def test_version_subprocess():
    out = subprocess.run([sys.executable, "-m", "crosslocate", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("crosslocate ")


def test_cli_import_is_light():
    """`crosslocate --help` must not import heavy optional stacks."""
    code = (
        "import sys, crosslocate.pipelines.cli as c; c.build_parser();"
        "heavy = [m for m in ('torch','pyrender','numba','faiss','distributed','matplotlib','OpenGL') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_become_exit_code_2(capsys):
    # Unknown preset values are rejected by argparse itself (exit 2 through SystemExit).
    try:
        main(["grid", "--region", "no-such-region-xyz", "--dry-run"])
    except SystemExit as exc:  # argparse choices
        assert exc.code == 2
    else:
        err = capsys.readouterr().err
        assert "no-such-region-xyz" in err


def test_imagenet_weights_flag_fails_fast_on_a_missing_file(tmp_path, capsys):
    """`train --imagenet-weights PATH` reaches the net config; a missing file fails before anything is built."""
    work = tmp_path / "work"
    missing = tmp_path / "vgg16.pth"
    code = main(["train", "--preset", "tiny", "--work", str(work), "--imagenet-weights", str(missing)])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not work.exists()
    args = build_parser().parse_args(["benchmark", "--backbone", "efficientnet_lite0", "--imagenet-weights", "builtin"])
    assert (args.backbone, args.imagenet_weights) == ("efficientnet_lite0", "builtin")


def test_training_flags_reach_the_preset_and_the_run_folder(tmp_path):
    from crosslocate.pipelines.commands.train import run_context

    argv = ["benchmark", "--work", str(tmp_path), "--train-photos", "2400", "--tuples-per-epoch", "524", "--seed", "2"]
    ctx = run_context(build_parser().parse_args([*argv, "--epochs", "36"]))
    train = ctx.preset.train
    assert (train.extra_photos, train.max_tuples, train.seed, train.epochs) == (2400, 524, 2, 36)
    assert ctx.run == tmp_path / "demo" / "runs" / "cpu-x2400-t524-e36-seed2"
    plain = run_context(build_parser().parse_args(["train", "--work", str(tmp_path)]))
    assert plain.preset.train.extra_photos == 0 and plain.run.name == "cpu"
    assert main(["train", "--work", str(tmp_path), "--train-photos", "-5"]) == 2  # one-line error, nothing built
    assert main(["train", "--work", str(tmp_path), "--epochs", "0"]) == 2
    assert main(["train", "--work", str(tmp_path), "--input-size", "8"]) == 2
    assert not (tmp_path / "demo").exists()
    assert main(["train", "--work", str(tmp_path), "--near-negatives", "-1"]) == 2
    near = run_context(build_parser().parse_args(["train", "--work", str(tmp_path), "--near-negatives", "1500"]))
    assert near.preset.train.near_negatives == 1500 and near.run.name == "cpu-nn1500"
    cached = run_context(build_parser().parse_args(["train", "--work", str(tmp_path), "--cache-size", "3000"]))
    assert cached.preset.train.cache_size == 3000 and cached.run.name == "cpu-c3000"
    assert main(["train", "--work", str(tmp_path), "--cache-size", "0"]) == 2
    tuned = run_context(
        build_parser().parse_args(["benchmark", "--work", str(tmp_path), "--lr", "3e-4", "--lr-decay", "0.95"])
    )
    assert (tuned.preset.train.lr, tuned.preset.train.lr_decay) == (3e-4, 0.95)
    assert tuned.run.name == "cpu-lr0.0003-ld0.95"
    assert main(["train", "--work", str(tmp_path), "--lr", "0"]) == 2
    assert main(["train", "--work", str(tmp_path), "--lr-decay", "1.5"]) == 2
    averaged = run_context(build_parser().parse_args(["train", "--work", str(tmp_path), "--ema", "0.99"]))
    assert averaged.preset.train.ema_decay == 0.99 and averaged.run.name == "cpu-ema0.99"
    assert main(["train", "--work", str(tmp_path), "--ema", "1"]) == 2
    softmax = run_context(
        build_parser().parse_args(["benchmark", "--work", str(tmp_path), "--loss", "infonce", "--temperature", "0.05"])
    )
    assert (softmax.preset.train.loss, softmax.preset.train.temperature) == ("infonce", 0.05)
    assert softmax.run.name == "cpu-infonce-tau0.05"
    assert main(["train", "--work", str(tmp_path), "--temperature", "0.05"]) == 2  # without --loss infonce
    paired = run_context(build_parser().parse_args(["benchmark", "--work", str(tmp_path), "--two-branch"]))
    assert paired.preset.net.two_branch is True and paired.run.name == "cpu-2branch"
    assert run_context(build_parser().parse_args(["train", "--work", str(tmp_path)])).preset.net.two_branch is False
    sized = run_context(build_parser().parse_args(["train", "--work", str(tmp_path), "--input-size", "128"]))
    assert sized.preset.net.input_size_px == 128 and sized.run.name == "cpu-px128"
