"""``mjx-biomech fit``'s command line: its defaults are the library's, every option is explained,
and its progress reports leave clean logs when stderr is not a terminal."""

import argparse
import inspect
import io

from rich.console import Console

from mjx_biomech.cli import fit as fit_cli
from mjx_biomech.fitting.fit import fit


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mjx-biomech fit")
    fit_cli.add_arguments(parser)
    return parser


def test_fit_command_defaults_are_the_library_defaults_and_shown_in_help():
    parser = _parser()
    library = {k: p.default for k, p in inspect.signature(fit).parameters.items()}
    args = parser.parse_args(["--calibration", "c.toml", "--keypoints", "k.npz", "--marker-set", "blazepose33", "--out", "o"])
    for option in ("steps", "lr", "representation", "solver", "seed", "body_prior_weight"):
        assert getattr(args, option) == library[option], option
    assert args.no_bundle_adjust is (not library["bundle_adjust"])
    assert args.free_left_right is (not library["tie_left_right"])
    assert args.no_relabel is (not library["relabel_left_right"])
    assert args.huber_px == library["huber_delta_px"] and args.knots_per_second == library["knots_per_second"]
    text = " ".join(parser.format_help().split())
    assert f"(default: {library['steps']})" in text
    from mjx_biomech.fitting.fit import ADAM_STEPS, LM_ITERATIONS

    assert f"None: {ADAM_STEPS}" in text and f"None: {LM_ITERATIONS}" in text
    # Every option says what it does.
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
    assert "implicit MLP" in text and "Levenberg-Marquardt" in text


def test_progress_without_a_terminal_is_plain_lines_that_move():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False)
    with fit_cli.progress_bars(console) as progress:
        progress("adam", 0, 100, {})
        for step in range(1, 101):
            progress("adam", step, 100, {"loss": 1.0 / step})
        progress("lm", 0, 4, {})
        for k in range(1, 5):
            progress("lm", k, 4, {"loss": 0.5})
    text = stream.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    adam = [line for line in lines if line.startswith("adam: ")]
    # The start, every tenth and the end: a log that shows the fit moving, not thousands of lines.
    assert [line.split()[1] for line in adam] == [f"{k}/100" for k in range(0, 101, 10)]
    assert adam[-1].split()[2:4] == ["loss", "0.01"]
    assert [line.split()[1] for line in lines if line.startswith("lm: ")] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
