"""Lightning's fit/validate/test for `DentVLM` + `DentDataModule` (imported only for these commands: the
data tools and their worker processes stay free of Lightning's import cost). `dentvlm test` with
``endpoint.base_url`` evaluates a model behind an OpenAI-compatible API instead of the local one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from dentvlm.cli_errors import ShortUsageErrors
from dentvlm.processes import children_die_with_this_process
from dentvlm.progress_bar import DentProgressBar
from dentvlm.quiet import quiet_wandb_loggers, silence_library_noise
from dentvlm.run_folder import (
    FailedRunCleanup,
    check_before_run,
    derive_run_paths,
    keep_wandb_files_in,
    resolved_checkpoint,
    run_config_path,
)

# Lightning evaluates under torch.inference_mode() by default; FSDP2's all-gather then fails on a GPU
# ("Inference tensors do not track version counter", in wait_for_unshard at the first test forward).
# no_grad (inference_mode false) costs nothing measurable here and works under every strategy.
TRAINER_DEFAULTS = {"inference_mode": False}


def finish_wandb_runs(trainer) -> None:
    """End the command's W&B run: its last records reach the run file now, and a next command in the same
    process (a notebook, a test) starts a run of its own instead of logging into this one (Lightning's
    WandbLogger reuses any run in progress)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
            logger._experiment = None


def _configures_a_progress_bar(callbacks) -> bool:
    import pydoc

    from lightning.pytorch.callbacks import ProgressBar

    entries = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
    kinds = [pydoc.locate(str(getattr(entry, "class_path", ""))) for entry in entries]
    return any(isinstance(kind, type) and issubclass(kind, ProgressBar) for kind in kinds)


def trainer_defaults() -> dict:
    """dentvlm's trainer defaults: no inference mode (above), its own progress bar and end-of-fit summary
    (appended to the config's callbacks), and no model summary table (dentvlm prints its parameter counts)."""
    from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE

    from dentvlm.fit_summary import FitSummary

    bar = [DentProgressBar()] if _RICH_AVAILABLE else []  # without rich: Lightning's own bar
    return {**TRAINER_DEFAULTS, "enable_model_summary": False, "callbacks": [*bar, FitSummary()]}


class DentArgumentParser(ShortUsageErrors, LightningArgumentParser):
    """Lightning's parser with short usage errors, "did you mean" for misspelled keys, and output
    folders derived from trainer.default_root_dir before the config is validated (a CSVLogger
    requires its save_dir)."""

    def format_help(self) -> str:
        """dentvlm's own options first (model, data, then the evaluation and progress sections), Lightning's
        trainer options after them, and a one-line usage: Lightning's order put them past line 500."""
        groups = self._action_groups
        ours = [g for g in groups if getattr(g, "dest", None)]
        first = sorted(ours, key=lambda g: (g.dest not in ("model", "data"), groups.index(g)))
        self._action_groups = [g for g in groups if g.title in ("positional arguments", "options")] + first + \
            [g for g in groups if g not in first and g.title not in ("positional arguments", "options")]
        usage, self.usage = self.usage, f"{self.prog} [--config FILE] [--print_config] [--<section>.<key> VALUE ...]"
        try:
            return super().format_help()
        finally:
            self._action_groups, self.usage = groups, usage

    def validate(self, namespace, *args, **kwargs) -> None:
        for config in [namespace, *(namespace.get(name) for name in ("fit", "validate", "test"))]:
            if hasattr(config, "get") and config.get("trainer") is not None:
                derive_run_paths(config)
        super().validate(namespace, *args, **kwargs)


class LogConfig(SaveConfigCallback):
    """Saves the resolved config (a training run's beside its logs, as Lightning does; a test's beside its
    results: see `dentvlm.run_folder.run_config_path`) and logs it to every logger (W&B shows it as the
    run config)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" and not self.already_saved:
            self.save_to_log_dir = False  # Lightning's place is the training config's
            path = run_config_path(trainer, stage)  # on every rank: trainer.log_dir is a collective
            if trainer.is_global_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = self.config.as_dict()
        config.pop("config", None)  # the --config file paths, not settings
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class DentCLI(LightningCLI):
    """LightningCLI with dentvlm's wiring: the data's processor follows the model path; the metric
    callbacks, the W&B prediction table, the results writer and plain-line progress are always there,
    each with its own config section (classification_metrics, report_metrics, prediction_table,
    results, progress); `test` also evaluates the baselines into the same results folder. Output
    folders follow trainer.default_root_dir (see `dentvlm.run_folder`). `dentvlm predict` is not
    Lightning's (it answers for new checkups, see `dentvlm.predict`)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        del commands["predict"]
        return commands

    def add_arguments_to_parser(self, parser) -> None:
        from dentvlm.data.monitor import DataMonitor
        from dentvlm.endpoint.settings import EndpointSettings
        from dentvlm.evaluation.results import ResultsWriter
        from dentvlm.evaluation.tables import PredictionTable
        from dentvlm.metrics.callbacks import ClassificationMetrics, ReportMetrics
        from dentvlm.progress import LineProgress

        parser.link_arguments("model.model_path", "data.processor_path")
        parser.link_arguments("model.trust_remote_code", "data.trust_remote_code")
        # Order matters: metrics compute before the table and the results writer read them.
        parser.add_lightning_class_args(ClassificationMetrics, "classification_metrics")
        parser.add_lightning_class_args(ReportMetrics, "report_metrics")
        parser.add_lightning_class_args(PredictionTable, "prediction_table")
        parser.add_lightning_class_args(ResultsWriter, "results")
        parser.add_lightning_class_args(DataMonitor, "data_monitor")
        parser.add_lightning_class_args(LineProgress, "progress")
        parser.add_class_arguments(EndpointSettings, "endpoint")

    def _parse_ckpt_path(self) -> None:
        """Lightning replaces the parsed model settings with those saved in a --ckpt_path checkpoint,
        after parsing, so `dentvlm test --ckpt_path last --model.max_new_tokens 512` would silently
        generate with the training run's settings. dentvlm keeps what the config and flags say; a
        checkpoint made with other fine-tuning settings is refused when loading (missing weights)."""

    def before_instantiate_classes(self) -> None:
        trainer = self.config[self.subcommand]["trainer"]
        keep_wandb_files_in(Path(trainer.get("default_root_dir") or "."))
        if trainer.get("enable_progress_bar") is False or _configures_a_progress_bar(trainer.get("callbacks")):
            # Lightning refuses a bar callback with the bar off, and a second bar
            self.trainer_defaults["callbacks"] = [c for c in self.trainer_defaults["callbacks"]
                                                  if not isinstance(c, DentProgressBar)]

    def after_instantiate_classes(self) -> None:
        quiet_wandb_loggers(self.trainer.loggers)
        # Before the model is built or a logger writes anything:
        check_before_run(self.subcommand, self.config[self.subcommand].get("ckpt_path"), self.trainer,
                         self.datamodule, self.model)

    def _run_subcommand(self, subcommand: str) -> None:
        cleanup = FailedRunCleanup(self.trainer, subcommand)
        try:
            endpoint = self._endpoint(subcommand)
            if subcommand in ("validate", "test"):  # dentvlm prints its own tables (per variant, one unit)
                self.config_init[subcommand]["verbose"] = False
            if subcommand == "test" and not self.model.hparams.score_classes:
                self.datamodule.hparams.threshold_split = None  # nothing to choose thresholds from
            if endpoint is None:
                super()._run_subcommand(subcommand)
            else:
                from dentvlm.endpoint.evaluate import evaluate_endpoint

                evaluate_endpoint(self.trainer, self.datamodule, self._results_writer(), endpoint,
                                  self.model.hparams.max_new_tokens)
                self._print_results()
        except BaseException:
            cleanup.discard()
            raise
        finish_wandb_runs(self.trainer)



    def _endpoint(self, subcommand: str):
        """The endpoint settings when `dentvlm test` evaluates an endpoint, else None."""
        endpoint = self.config_init[subcommand].get("endpoint")
        if endpoint is None or not endpoint.enabled:
            return None
        if subcommand != "test":
            raise ValueError(f"endpoint.base_url: only `dentvlm test` evaluates an endpoint (not {subcommand})")
        if self.config_init[subcommand].get("ckpt_path"):
            raise ValueError("--ckpt_path and endpoint.base_url: evaluate either a checkpoint or an endpoint per run")
        return endpoint

    def _results_writer(self):
        from dentvlm.evaluation.results import ResultsWriter

        return next(c for c in self.trainer.callbacks if isinstance(c, ResultsWriter))

    def before_test(self) -> None:
        from dentvlm.evaluation.runner import first_variant_name

        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        self.model.variant = first_variant_name(ckpt_path)
        self.model.evaluated_checkpoint = resolved_checkpoint(ckpt_path, self.trainer)

    def after_test(self) -> None:
        from dentvlm.evaluation.runner import run_baselines

        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        run_baselines(self.trainer, self.model, self.datamodule, self._results_writer(), ckpt_path)
        self._print_results()

    def _print_results(self) -> None:
        from dentvlm.fit_summary import log_lines

        if self.trainer.is_global_zero:
            print("\n".join([self._results_writer().summary(), *log_lines(self.trainer)]), flush=True)


def with_environment_overrides(argv: list[str], environ: dict[str, str]) -> list[str]:
    """Insert ``DENTVLM_<COMMAND>__<KEY>__<SUBKEY>=value`` variables as ``--key.subkey value``
    after the last ``--config``: they override config files, and explicit flags after them win.
    (jsonargparse's own environment parsing ranks below config files, so it cannot override them.)"""
    prefix = f"DENTVLM_{argv[0].upper()}__"
    overrides = []
    for name, value in sorted(environ.items()):
        if name.startswith(prefix) and name != prefix + "CONFIG":
            overrides += ["--" + name[len(prefix):].lower().replace("__", "."), value]
    position = 1
    for index, arg in enumerate(argv):
        if arg == "--config":
            position = index + 2
        elif arg.startswith("--config="):
            position = index + 1
    return argv[:position] + overrides + argv[position:]


def check_config_files(argv: list[str]) -> None:
    """Name the file of a YAML syntax error (jsonargparse says only "<unicode string>").

    Raises:
        ValueError: a --config file that exists is not valid YAML (file, line and column named).
    """
    import yaml

    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    paths += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        if not os.path.isfile(path):
            continue  # jsonargparse names a missing file itself
        try:
            yaml.safe_load(open(path, encoding="utf-8").read())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text, so not a config file") from None


def run_trainer_command(argv: list[str] | None) -> DentCLI:
    """Lightning's subcommands; `argv` None reads sys.argv (as a console script)."""
    from dentvlm.data.datamodule import DentDataModule
    from dentvlm.model.module import DentVLM

    children_die_with_this_process()  # DataLoader workers must not outlive a killed run
    silence_library_noise()
    check_config_files(sys.argv[1:] if argv is None else argv)
    if argv is None:  # a console script: LightningCLI reads sys.argv itself (and warns if given both)
        sys.argv[1:] = with_environment_overrides(sys.argv[1:], dict(os.environ))
    else:
        argv = with_environment_overrides(argv, dict(os.environ))
    return DentCLI(
        DentVLM,
        DentDataModule,
        args=argv,
        trainer_defaults=trainer_defaults(),
        parser_kwargs={"env_prefix": "DENTVLM", "prog": "dentvlm"},
        parser_class=DentArgumentParser,
        save_config_callback=LogConfig,
        save_config_kwargs={"overwrite": True},
    )
