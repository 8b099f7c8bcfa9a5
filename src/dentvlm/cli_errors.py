"""How the `dentvlm` command refuses.

- Expected errors (bad input, bad config, missing files: `ValueError`, `OSError`, Lightning's
  `MisconfigurationException`, a non-finite loss) print one line, ``dentvlm <command>: error: ...``,
  and exit 1. Their messages name the file, row or key; a traceback would only bury that line.
  ``--debug`` (or ``DENTVLM_DEBUG=1``) shows the traceback. Anything else is a bug and keeps its
  traceback.
- Usage errors (a misspelled flag or config key, a bad value) print the error, "did you mean" for
  unknown keys, and where to find the full option list, and exit 2, instead of argparse's full usage.
"""

from __future__ import annotations

import difflib
import re
import sys

from jsonargparse import ArgumentParser

DEBUG_FLAG = "--debug"
DEBUG_ENV = "DENTVLM_DEBUG"


def debug_requested(args: list[str], environ) -> tuple[bool, list[str]]:
    """(whether tracebacks were asked for, `args` without the ``--debug`` flag)."""
    flag = DEBUG_FLAG in args
    return flag or environ.get(DEBUG_ENV, "") not in ("", "0", "false"), [a for a in args if a != DEBUG_FLAG]


def is_expected(exc: BaseException) -> bool:
    """Errors that report bad input or settings, as opposed to bugs."""
    if isinstance(exc, (ValueError, OSError, FloatingPointError)):
        return True
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    return lightning is not None and isinstance(exc, lightning.MisconfigurationException)


def one_line(exc: BaseException) -> str:
    """The message of `exc`, without the traceback text PyTorch embeds when a DataLoader worker failed."""
    text = str(exc).strip() or type(exc).__name__
    if "Original Traceback" in text:  # "Caught ValueError in DataLoader worker process 0.\nOriginal ..."
        text = text.rsplit(f"\n{type(exc).__name__}: ", 1)[-1].strip()
    return text


def report(command: str, exc: BaseException) -> None:
    print(f"dentvlm {command}: error: {one_line(exc)}", file=sys.stderr)


def unknown_keys(message: str) -> list[str]:
    """Keys an argument or config error says are not accepted."""
    keys = [k for k in re.findall(r"(?:^|\s)--([A-Za-z_][\w.\-]*)", message.split("arguments:", 1)[-1])]
    keys += [f"{group}.{option}" for group, option in
             re.findall(r"Group '([\w.]+)' does not accept option '([\w.]+)'", message)]
    keys += re.findall(r"Subcommand '[\w.]+' does not accept option '([\w.]+)'", message)
    keys += re.findall(r"[Kk]ey \"?'?([\w.]+)\"?'? is not expected", message)
    return keys


def known_keys(parser) -> set[str]:
    """Every ``--key`` a parser accepts, subcommand parsers included (without the subcommand prefix)."""
    keys = set()
    for action in parser._actions:
        keys.update(option[2:] for option in action.option_strings if option.startswith("--"))
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for sub in choices.values():
                if hasattr(sub, "_actions"):
                    keys |= known_keys(sub)
    return keys


def suggestions(message: str, parser) -> list[str]:
    """``--wrong: did you mean --right?`` lines for the unknown keys in `message`."""
    keys = unknown_keys(message)
    if not keys:
        return []
    known = sorted(known_keys(parser))
    lines = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if not close:  # a wrong leaf under a right section: compare the last part within the section
            section, _, leaf = key.rpartition(".")
            siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == section}
            leaf_match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.5)
            close = [siblings[leaf_match[0]]] if leaf_match else []
        if close:
            lines.append(f"  --{key}: did you mean --{close[0]}?")
    return lines


class ShortUsageErrors:
    """Mixin for jsonargparse parsers: a short error with suggestions instead of the full usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        lines = [f"{prog}: error: {message.strip()}", *suggestions(message, self),
                 f"Run `{prog} --help` for all options."]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.exit(2)


class ToolParser(ShortUsageErrors, ArgumentParser):
    """The parser of the data and export tools."""
