"""`dentvlm` entry point: data and export tools, plus Lightning's fit/validate/test/predict."""

from __future__ import annotations

import sys

from jsonargparse import CLI

TOOLS = ("synth", "shard")
USAGE = """usage: dentvlm COMMAND [options]

data:
  synth      write a synthetic release in the real COde layout
  shard      convert a COde release or ShareGPT JSON into WebDataset shards

Run `dentvlm COMMAND --help` for a command's options."""


def run_tool(argv: list[str]) -> None:
    """Run one of the non-training commands through jsonargparse (signature = flags)."""
    from dentvlm import commands

    CLI({name: getattr(commands, name) for name in TOOLS}, args=argv, as_positional=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in TOOLS:
        run_tool(argv)
        return
    raise SystemExit(f"dentvlm: unknown command {argv[0]!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
