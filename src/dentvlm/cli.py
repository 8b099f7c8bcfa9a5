"""`dentvlm` entry point: Lightning's fit/validate/test for `DentVLM` + `DentDataModule`, and the
data, export, serving and prediction tools (synth, shard, tiny, export, serve, predict) as plain
functions whose signatures are their flags."""

from __future__ import annotations

import difflib
import os
import sys

from jsonargparse import CLI

from dentvlm.cli_errors import ToolParser, debug_requested, is_expected, report

TOOLS = ("synth", "shard", "tiny", "export", "serve", "predict")
TRAINER_COMMANDS = ("fit", "validate", "test")
USAGE = """usage: dentvlm COMMAND [options]

data:
  synth      write a synthetic release in the real COde layout
  shard      convert a COde release or ShareGPT JSON into WebDataset shards
model:
  fit        fine-tune (dentvlm fit --config configs/tiny.yaml)
  validate   run validation once
  test       evaluate on the test split (the local model, or an OpenAI-compatible endpoint)
  tiny       build the embedded tiny Qwen2.5-VL model folder
  export     turn a checkpoint folder into an adapter or a merged Hugging Face model
use:
  serve      serve a checkpoint as an OpenAI-compatible chat completions API
  predict    answer for new checkups (a COde-layout folder, or a CSV/JSONL of checkups)

Run `dentvlm COMMAND --help` for a command's options. Trainer commands take repeatable
--config files, `--print_config`, and DENTVLM_<COMMAND>__<KEY> environment overrides
(e.g. DENTVLM_FIT__TRAINER__MAX_EPOCHS=1; they override config files, flags override them).
Errors in input or settings print one line; --debug (or DENTVLM_DEBUG=1) shows their traceback."""


def run_tool(argv: list[str]) -> None:
    """Run one of the non-training commands through jsonargparse (signature = flags)."""
    from dentvlm import commands

    CLI({name: getattr(commands, name) for name in TOOLS}, args=argv, as_positional=True, parser_class=ToolParser,
        prog="dentvlm")


def main(argv: list[str] | None = None) -> None:
    """The `dentvlm` command; `argv` None reads sys.argv. Expected errors exit 1 with one line."""
    debug, args = debug_requested(sys.argv[1:] if argv is None else list(argv), os.environ)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    command = args[0]
    if command not in TOOLS + TRAINER_COMMANDS:
        close = difflib.get_close_matches(command, TOOLS + TRAINER_COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SystemExit(f"dentvlm: unknown command {command!r}{hint}; run `dentvlm --help` for the commands")
    try:
        if command in TOOLS:
            run_tool(args)
        else:
            from dentvlm.trainer_cli import run_trainer_command

            if argv is None:  # LightningCLI reads sys.argv itself (and warns if given both)
                sys.argv[1:] = args
            run_trainer_command(None if argv is None else args)
    except Exception as exc:
        if debug or not is_expected(exc):
            raise
        report(command, exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
