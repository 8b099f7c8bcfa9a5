"""`dentvlm` entry point: Lightning's fit/validate/test/predict for `DentVLM` + `DentDataModule`,
and the data and export tools (synth, shard, tiny, export) as plain functions whose signatures are
their flags."""

from __future__ import annotations

import sys

from jsonargparse import CLI
from lightning.pytorch.cli import LightningCLI

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
(e.g. DENTVLM_FIT__TRAINER__MAX_EPOCHS=1)."""


class DentCLI(LightningCLI):
    """LightningCLI with dentvlm's wiring: the data's processor follows the model path; the metric
    callbacks, the W&B prediction table and the results writer are always there, each with its own
    config section (classification_metrics, report_metrics, prediction_table, results); `test` also
    evaluates the baselines into the same results folder."""

    def add_arguments_to_parser(self, parser) -> None:
        from dentvlm.evaluation.results import ResultsWriter
        from dentvlm.evaluation.tables import PredictionTable
        from dentvlm.metrics.callbacks import ClassificationMetrics, ReportMetrics

        parser.link_arguments("model.model_path", "data.processor_path")
        parser.link_arguments("model.trust_remote_code", "data.trust_remote_code")
        # Order matters: metrics compute before the table and the results writer read them.
        parser.add_lightning_class_args(ClassificationMetrics, "classification_metrics")
        parser.add_lightning_class_args(ReportMetrics, "report_metrics")
        parser.add_lightning_class_args(PredictionTable, "prediction_table")
        parser.add_lightning_class_args(ResultsWriter, "results")

    def _results_writer(self):
        from dentvlm.evaluation.results import ResultsWriter

        return next(c for c in self.trainer.callbacks if isinstance(c, ResultsWriter))

    def before_test(self) -> None:
        from dentvlm.evaluation.runner import first_variant_name

        self._results_writer().variant = first_variant_name(self.config_init[self.subcommand].get("ckpt_path"))

    def after_test(self) -> None:
        from dentvlm.evaluation.runner import run_baselines

        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        run_baselines(self.trainer, self.model, self.datamodule, self._results_writer(), ckpt_path)


def run_trainer_command(argv: list[str] | None) -> DentCLI:
    """Lightning's subcommands; `argv` None reads sys.argv (as a console script)."""
    from dentvlm.data.datamodule import DentDataModule
    from dentvlm.model.module import DentVLM

    return DentCLI(
        DentVLM,
        DentDataModule,
        args=argv,
        parser_kwargs={"default_env": True, "env_prefix": "DENTVLM"},
        save_config_kwargs={"overwrite": True},
    )


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
        run_trainer_command(None if argv is None else args)
    else:
        raise SystemExit(f"dentvlm: unknown command {args[0]!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
