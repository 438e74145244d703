"""`editpersist`: what a user runs outside Snakemake.

    editpersist plan     the grid of a config: cells, jobs per rule, GPU-hours and disk
                         (--size: every job's GPU memory and time at the models' real shapes)
    editpersist export   a model state as a diffusers pipeline folder (and its LoRA file)
    editpersist compare  two editors' retentions side by side, with paired intervals
    editpersist bench    the benchmarks (BENCHMARKS.md)

The study itself runs with `snakemake` (README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, InputError

# Subcommands that keep their own options and --help.
PASS_THROUGH = {
    "compare": "two editors' retentions on the same cells, side by side, with paired intervals",
    "bench": "a benchmark: uce, refact, finetune, generation, sampling, storage, overhead, stages, size, "
             "calibrate, plan, configs, coverage, toy-finetunes",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="editpersist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run `editpersist <command> --help` for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    plan = sub.add_parser("plan", help="the grid of a config, its jobs, GPU-hours and disk",
                          description="Plan a study without running it: the dry run's jobs per rule, the cost "
                                      "model's GPU-hours and disk per model, and with --size every job's GPU "
                                      "memory and time at the models' real shapes (no weights are loaded).")
    plan.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    plan.add_argument("--profile", type=Path, default=None, help="plan as this Snakemake profile would run it")
    plan.add_argument("--size", action="store_true", help="also size every GPU job (results/bench/size_<config>.*)")
    export = sub.add_parser("export", help="a model state as a diffusers pipeline folder",
                            description="Write a model state of a study (base, edited, fine-tuned, re-edited, "
                                        "transfer) as a folder DiffusionPipeline.from_pretrained loads; an adapter "
                                        "state also as lora/pytorch_lora_weights.safetensors for load_lora_weights.")
    export.add_argument("state", help="a state name, e.g. edit/uce/appearance/circle-to-blue/ft/lora/sks-square/seed0")
    export.add_argument("folder", type=Path, help="the pipeline folder to write (must not exist)")
    export.add_argument("--model", required=True, help="the model entry's name in the config")
    export.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    export.add_argument("--results", type=Path, default=None, help="the study's results folder (default: the config's)")
    export.add_argument("--device", default="cpu")
    for name, text in PASS_THROUGH.items():  # listed here; main() hands them their arguments
        sub.add_parser(name, help=text, add_help=False)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # compare and bench parse their own options (and --help), so they get them untouched.
        if argv[:1] == ["compare"]:
            from .evaluation.compare import main as compare

            compare(argv[1:], prog="editpersist compare")
        elif argv[:1] == ["bench"]:
            from .bench import main as bench

            bench(argv[1:])
        else:
            args = parser().parse_args(argv)
            print(plan(args.configfile, args.profile, args.size) if args.command == "plan" else export(args))
    except (ConfigError, InputError) as e:
        sys.exit(f"editpersist: {e}")


def plan(configfile: Path, profile: Path | None, size: bool) -> str:
    from .bench.runs import plan_bench

    out = plan_bench(configfile, profile)
    lines = [f"# {configfile}", "", f"{out['cells']} cells; the dry run took {out['dry_run_s']} s.", "",
             "| rule | jobs |", "| --- | ---: |"]
    lines += [f"| {rule} | {n:,} |" for rule, n in out["jobs"].items()]
    lines += ["", "Cost model (one H100; editpersist.bench.costs):", "", "| model | GPU-hours | disk (GB) |",
              "| --- | ---: | ---: |"]
    lines += [f"| {m} | {sum(h.values()):,.1f} | {sum(out['disk_gb'][m].values()):,.1f} |"
              for m, h in out["gpu_hours"].items()]
    lines += [f"| total | {out['gpu_hours_total']:,.1f} | {out['disk_gb_total']:,.1f} |"]
    if size:
        from .sizing.report import size_config

        size_config(configfile, profile, Path("results/bench"))
        lines += ["", (Path("results/bench") / f"size_{configfile.stem}.md").read_text()]
    return "\n".join(lines)


def export(args) -> str:
    from .config import load_config, output_roots
    from .stages.export import export_state

    config = load_config(args.configfile)  # a Hub model's path: its snapshot in the cache
    models = {m["name"]: m for m in config["models"]}
    if args.model not in models:
        raise ConfigError(f"{args.configfile}: no model {args.model!r} (models: {', '.join(models)})")
    if args.folder.exists():
        raise InputError(f"{args.folder}: already exists; export writes a new folder")
    results = args.results or Path(output_roots(config)[0])
    entry = models[args.model]
    record = export_state(Path(entry["path"]), entry["family"], results / "states" / args.model, args.state,
                          args.folder, args.device)
    return f"{record['state']} -> {args.folder}" + (f" (and {record['lora']['file']})" if "lora" in record else "")


if __name__ == "__main__":
    main()
