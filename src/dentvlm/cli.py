"""`dentvlm` entry point: Lightning's fit/validate/test/predict for `DentVLM` + `DentDataModule`,
and the data and export tools (synth, shard, tiny, export) as plain functions whose signatures are
their flags."""

from __future__ import annotations

import sys

from jsonargparse import CLI

TOOLS = ("synth", "shard", "tiny", "export")
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = """usage: dentvlm COMMAND [options]

data:
  synth      write a synthetic release in the real COde layout
  shard      convert a COde release or ShareGPT JSON into WebDataset shards
model:
  fit        fine-tune (dentvlm fit --config configs/tiny.yaml)
  validate   run validation once
  test       evaluate on the test split
  predict    generate answers for the test split
  tiny       build the embedded tiny Qwen2.5-VL model folder
  export     turn a checkpoint folder into an adapter or a merged Hugging Face model

Run `dentvlm COMMAND --help` for a command's options. Trainer commands take repeatable
--config files, `--print_config`, and DENTVLM_<COMMAND>__<KEY> environment overrides
(e.g. DENTVLM_FIT__TRAINER__MAX_EPOCHS=1; they override config files, flags override them)."""


def run_tool(argv: list[str]) -> None:
    """Run one of the non-training commands through jsonargparse (signature = flags)."""
    from dentvlm import commands

    CLI({name: getattr(commands, name) for name in TOOLS}, args=argv, as_positional=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    if args[0] in TOOLS:
        run_tool(args)
    elif args[0] in TRAINER_COMMANDS:
        from dentvlm.trainer_cli import run_trainer_command

        run_trainer_command(None if argv is None else args)
    else:
        raise SystemExit(f"dentvlm: unknown command {args[0]!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
