"""The `dlforge` command: one subcommand per lifecycle verb.

User errors (bad spec, data or run) print one line and exit with code 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from functools import wraps
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from typer.core import TyperCommand

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="dlforge: from a YAML spec to a trained, evaluated, reported model.")
err = Console(stderr=True)
out = Console()
_state = {"debug": False}
log = logging.getLogger("dlforge")


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False) -> None:
    _state["debug"] = debug
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=err, show_path=False, rich_tracebacks=debug)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DlforgeError into one red line and exit code 2 (the traceback only with --debug)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dlforge.errors import DlforgeError

        try:
            return command(*args, **kwargs)
        except DlforgeError as e:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def _run_dir(given: Path | None) -> Path | None:
    """Every verb's run argument, as `dlforge.run.resolve_run` reads it: a run directory, `latest` (the newest
    finished run in runs/) or the start of a run's name; a name that matches no run, or several, is a one-line error
    (exit 2) before the verb starts."""
    from dlforge.run import resolve_run

    return None if given is None else _friendly(resolve_run)(given)


RUN_HELP = "a run directory, `latest` (the newest finished run in runs/) or the start of a run's name"
RunArg = Annotated[Path, typer.Argument(help=RUN_HELP, show_default=False, callback=_run_dir)]


@app.command()
@_friendly
def train(spec: Annotated[Path | None, typer.Argument(help="the spec YAML file", show_default=False)] = None,
          set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: train.epochs=3")] = None,
          runs_dir: Annotated[Path, typer.Option(help="where new runs are created")] = Path("runs"),
          resume: Annotated[Path | None, typer.Option(help="finish a stopped run (a directory, or the start of its "
                                                           "name)", callback=_run_dir)] = None,
          force: Annotated[bool, typer.Option("--force", help="--resume a run whose RUNNING marker names a process "
                                                              "alive on this host (one that is not training it)")
                           ] = False) -> None:
    """Train a model from a spec into a new run directory (or resume a stopped one). Ctrl-C or SIGTERM (Kubernetes
    evicting the pod) stop it with its last finished epoch checkpointed: exit codes 130 and 143."""
    import dlforge
    from dlforge.errors import DlforgeError
    from dlforge.pipeline import Terminated
    from dlforge.run import Run

    try:
        if resume is not None:
            if spec is not None or set_:
                raise DlforgeError("--resume continues a run with its own spec.yaml: give no SPEC and no --set")
            run = Run.open(resume, complete=False)
            if run.is_complete:
                raise DlforgeError(f"{resume}: this run already finished")
            alive = run.training_process()
            if alive and not force:  # two processes writing one run would interleave its checkpoints and metrics
                raise DlforgeError(f"{resume}: still training: process {alive['pid']} on "
                                   f"{alive.get('host', 'this host')} since {alive.get('started', '?')}; stop it "
                                   "first, or give --force if that process is not training this run")
            run = dlforge.train(run.read_spec(), resume=run)
        elif spec is None:
            raise DlforgeError("give a spec file (dlforge train spec.yaml) or --resume RUN_DIR")
        else:
            run = dlforge.train(dlforge.load_spec(spec, set_ or []), runs_dir=runs_dir)
    except Terminated:
        err.print("[yellow]terminated[/] (SIGTERM)", highlight=False)
        raise typer.Exit(128 + signal.SIGTERM) from None
    if run is not None:
        _print_summary(run)


@app.command()
@_friendly
def validate(spec: Annotated[Path, typer.Argument(help="the spec YAML file")],
             set_: Annotated[list[str] | None, typer.Option("--set", help="override a field")] = None,
             data: Annotated[bool, typer.Option("--data", help="also read and check the data (and build the model) "
                                                               "as training would, training nothing")] = False,
             ) -> None:
    """Check a spec without training; print it resolved. With --data, check its data too (on stderr: the spec on
    stdout stays YAML): a problem is one line and exit code 2; what training would skip or drop, one line each."""
    import dlforge
    from dlforge.spec import spec_to_yaml

    checked = dlforge.load_spec(spec, set_ or [])
    out.print(spec_to_yaml(checked), highlight=False)
    if data:
        from dlforge.errors import listed
        from dlforge.pipeline import check_data

        meta = check_data(checked)
        notes = [f"skipped {s.get('file') or s.get('item')}: {s['reason']}" for s in meta.get("skipped") or []]
        notes += [f"dropped {n} row(s): {reason.replace('_', ' ')}"
                  for reason, n in ((meta.get("data") or {}).get("dropped") or {}).items() if n]
        classes = meta.get("classes")
        notes.append("data OK: " + ", ".join(f"{k} {v}" for k, v in meta.get("sizes", {}).items())
                     + (f"; {len(classes)} classes: {listed(classes)}" if classes else ""))
        for note in notes:
            err.print(note, highlight=False, soft_wrap=True)


@app.command()
@_friendly
def evaluate(run: RunArg,
             data: Annotated[str | None, typer.Option(help="another data source (default: the test split)")] = None,
             out_dir: Annotated[Path | None, typer.Option("--out", help="where eval.json and plots go")] = None,
             device: str = "cpu") -> None:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix, calibration; writes eval.json."""
    from dlforge.evaluate import evaluate_run

    result, where = evaluate_run(run, data, out_dir, device)
    out.print(_metrics_table(result, f"evaluation on {result['data']} ({result['n']} examples)"))
    out.print(f"wrote {where / 'eval.json'}")


def _metrics_table(result: dict, title: str) -> Table:
    """Metric rows; one column per method where the task compares against baselines (forecasting)."""
    methods = result.get("comparison") or {"value": result["metrics"]}
    table = Table(title=title)
    table.add_column("metric")
    for m in methods:
        table.add_column(m, justify="right")
    for k in result["metrics"]:
        table.add_row(k, *(f"{scores[k]:.4f}" if k in scores else "n/a" for scores in methods.values()))
    return table


class _PredictCommand(TyperCommand):
    """`dlforge predict`: its help ends with each task's prediction options, read from the registered tasks when the
    help is shown; `--conf 0.5`, a task option's flag from before `-o`, still parses (deprecated) as `-o conf=0.5`."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.epilog = _options_help()
        super().format_help(ctx, formatter)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _old_option_flags(self, args))


@app.command(cls=_PredictCommand)
@_friendly
def predict(run: RunArg,
            inputs: Annotated[list[Path] | None, typer.Argument(help="input files (images, ...)",
                                                              show_default=False)] = None,
            text: Annotated[list[str] | None, typer.Option("--text", "--prompt",
                                                           help="text tasks: a text (or prompt); repeatable")] = None,
            option: Annotated[list[str] | None, typer.Option(
                "--option", "-o", show_default=False, help="a prediction option of the run's task as NAME=VALUE "
                "(VALUE read as YAML), e.g. -o conf=0.5; repeatable. Each task's options are listed below.")] = None,
            device: str = "cpu",
            save_images: Annotated[Path | None, typer.Option(help="write annotated images (PNG) here")] = None,
            ) -> None:
    """Predict for input files or texts; prints a JSON list."""
    import dlforge
    from dlforge.errors import DlforgeError

    if bool(inputs) == bool(text):
        raise DlforgeError("give input files (dlforge predict RUN a.png b.png) or texts (--text \"...\"), not both")
    options = _parse_options(option or [])
    predictor = dlforge.load(run, device=device)
    _check_option_names(options, predictor)
    items = [str(p) for p in inputs] if inputs else list(text)
    predictions = predictor.predict(items, **options)  # the task validates the values, naming the option
    if save_images is not None:
        _save_annotated(predictor, inputs or [], predictions, save_images)
    print(json.dumps([{"input": item, **pred} for item, pred in zip(items, predictions, strict=True)], indent=2))


def _parse_options(given: list[str]) -> dict[str, Any]:
    """`-o NAME=VALUE` strings -> {name: value}, each value read as YAML (0.5, 6, true, null, [1, 2])."""
    import yaml

    from dlforge.errors import DlforgeError

    options = {}
    for item in given:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DlforgeError(f"-o {item}: expected NAME=VALUE, e.g. -o conf=0.5")
        try:
            options[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise DlforgeError(f"-o {name}={value}: the value is not valid YAML") from None
    return options


def _check_option_names(options: dict[str, Any], predictor: Any) -> None:
    from dlforge.errors import DlforgeError
    from dlforge.registry import did_you_mean

    allowed = predictor.prediction_options
    for name in options:
        if name not in allowed:
            raise DlforgeError(f"-o {name}: {predictor.meta['task']} predictions take no option {name}"
                               f"{did_you_mean(name, allowed)}; their options: {', '.join(allowed) or 'none'}")


def _task_options() -> dict[str, dict[str, Any]]:
    """Task -> {option: its field in the task's predict spec (None where the spec has none)}, for each registered
    task that takes prediction options."""
    import dlforge.tasks  # noqa: F401  (registers the tasks)
    from dlforge.registry import TASKS

    found = {}
    for name in TASKS.names():
        task = TASKS.get(name)
        predict = task.spec_class.model_fields.get("predict")
        fields = getattr(predict.annotation, "model_fields", {}) if predict is not None else {}
        if task.prediction_options:
            found[name] = {option: fields.get(option) for option in task.prediction_options}
    return found


def _options_help() -> str:
    """The end of `dlforge predict --help`: each task's options, described by its predict spec."""
    from rich.markup import escape

    paragraphs = ["Prediction options (-o NAME=VALUE; default: the run's spec):"]
    for task, options in _task_options().items():
        described = []
        for option, field in options.items():
            about = [field.description] if field is not None and field.description else []
            if field is not None and field.default is not None:
                about.append(f"default {field.default}")
            described.append(f"{option} ({'; '.join(about)})" if about else option)
        paragraphs.append(f"{task}: {', '.join(described)}")
    return "\n\n".join(escape(p) for p in [*paragraphs, "Other tasks take none."])


def _old_option_flags(command: TyperCommand, args: list[str]) -> list[str]:
    """`--conf 0.5` or `--max-new-tokens=6` -> `--option conf=0.5`: flags `predict` had for some tasks' options
    before `-o` (deprecated, with a warning). Any task's option parses so; other unknown flags stay errors."""
    own = {flag: p for p in command.params if p.param_type_name == "option" for flag in (*p.opts, *p.secondary_opts)}
    names = {option for options in _task_options().values() for option in options}
    rest, parsed = list(args), []
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        name = flag[2:].replace("-", "_")
        if arg == "--":
            return [*parsed, arg, *rest]
        if flag.startswith("--") and flag not in own and name in names and (eq or rest):
            value = value if eq else rest.pop(0)
            log.warning("%s is deprecated: use -o %s=%s", flag, name, value)
            parsed += ["--option", f"{name}={value}"]
        else:
            parsed.append(arg)
            if arg in own and not own[arg].is_flag and rest:  # its value, whatever it looks like
                parsed.append(rest.pop(0))
    return parsed


def _save_annotated(predictor: Any, inputs: list[Path], predictions: list[dict], folder: Path) -> None:
    """<folder>/<input stem>.<kind>.png for each picture the task draws of a prediction."""
    import numpy as np
    from PIL import Image

    from dlforge._io import atomic_write
    from dlforge.tasks.capabilities import Annotated

    annotated = predictor.capability(Annotated)
    folder.mkdir(parents=True, exist_ok=True)
    for path, pred in zip(inputs, predictions, strict=True):
        for kind, picture in annotated.annotate(str(path), pred, predictor.meta).items():
            image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture))
            atomic_write(folder / f"{path.stem}.{kind}.png", lambda p, im=image: im.save(p, format="PNG"))


@app.command()
@_friendly
def explain(run: RunArg,
            inputs: Annotated[list[Path] | None, typer.Argument(help="input files: images; .json instances (series, "
                                                                   "rows); .csv rows; text files", show_default=False)
                              ] = None,
            text: Annotated[list[str] | None, typer.Option("--text", help="text models: a text; repeatable")] = None,
            method: Annotated[str | None, typer.Option(help="ig, saliency, gradcam, occlusion, lime or shap "
                                                            "[default: the input kind's]", show_default=False)] = None,
            target: Annotated[str | None, typer.Option(help="the class (forecasts: quantile) to explain [default: "
                                                            "the prediction]", show_default=False)] = None,
            box: Annotated[int | None, typer.Option(help="detection: which detected object (0: the best)",
                                                    show_default=False)] = None,
            out_dir: Annotated[Path | None, typer.Option("--out", help="[default: <run>/explanations]",
                                                         show_default=False)] = None,
            device: str = "cpu") -> None:
    """Which parts of each input drove the prediction: a picture (PNG; HTML for texts) and JSON per input, with
    trust checks (deletion curve against random order; Integrated Gradients' completeness)."""
    import dlforge
    from dlforge.explain import explain as explain_items
    from dlforge.explain import write, write_summary
    from dlforge.explain.inputs import read_inputs
    from dlforge.explain.render import record_checks
    from dlforge.report.html import write_report

    predictor = dlforge.load(run, device=device)
    items, names = read_inputs(predictor, inputs or [], text or [])
    # SHAP compares a row with background rows: the other rows given (one row alone: the typical row)
    found = explain_items(predictor, items, method=method, target=target, box=box,
                          background=items[:100] if len(items) > 1 else None)
    folder = out_dir or run / "explanations"
    written = write(found, folder, names) + (write_summary(found, folder) if len(found) > 1 else [])
    record_checks(found, run)
    write_report(dlforge.Run.open(run))  # the model card and report show the checks
    table = Table(title=f"{found[0].method} explanations of {len(found)} input(s)")
    for col in ("input", "explained", "score", "deletion AUC", "random order AUC", "IG completeness error"):
        table.add_column(col, justify="left" if col in ("input", "explained") else "right")
    for name, e in zip(names, found, strict=True):
        d, c = e.checks["deletion"], e.checks.get("completeness") or {}
        error = c.get("relative_error")
        table.add_row(name, ", ".join(f"{k} {v}" for k, v in e.target.items() if k != "score"), f"{e.score:.4g}",
                      f"{d['auc']:.4g}", f"{d['random_auc']:.4g}", "" if error is None else f"{error:.2%}")
    out.print(table)
    out.print(f"wrote {len(written)} files to {folder}")


@app.command()
@_friendly
def audit(run: RunArg,
          sensitive: Annotated[str, typer.Option(help="the group column(s) to compare, comma-separated: sex,race",
                                                 show_default=False)],
          data: Annotated[str | None, typer.Option(help="data as the task reads it, with the group columns [default: "
                                                        "the test split]", show_default=False)] = None,
          positive: Annotated[str | None, typer.Option(help="the class audited as the positive outcome [default: the "
                                                            "second of two; required with more, one-vs-rest]",
                                                       show_default=False)] = None,
          mitigate: Annotated[str | None, typer.Option(help="threshold: fit fairlearn's ThresholdOptimizer on half "
                                                            "the rows, store it in the run (the Predictor and server "
                                                            "apply it), compare on the other half",
                                                       show_default=False)] = None,
          constraint: Annotated[str, typer.Option(help="with --mitigate: demographic_parity or equalized_odds")
                                ] = "demographic_parity",
          n_boot: Annotated[int, typer.Option(min=0, help="bootstrap resamples for the intervals (0: none)")] = 100,
          min_group: Annotated[int, typer.Option(min=1, help="smaller groups are flagged and left out of the "
                                                             "differences and ratios")] = 10,
          device: str = "cpu") -> None:
    """Fairness audit of a classifier: groups' sizes, base rates, missing values and proxies in the data; accuracy,
    selection rate, TPR, FPR and calibration per group with bootstrap intervals, demographic parity and equalized
    odds (fairlearn). Writes <run>/audit/audit.json and audit.html, and refreshes the report and model card."""
    from dlforge.fairness import audit_run

    result, folder = audit_run(run, sensitive, data=data, positive=positive, mitigate=mitigate,
                               constraint=constraint, n_boot=n_boot, min_group=min_group, device=device)
    table = Table(title=f"{result['rows']} rows of {result['data_source']}, positive class {result['positive']}, "
                        f"decisions {result['decisions']}")
    for col in ("column", "group", "n", "accuracy", "selection rate", "TPR", "FPR"):
        table.add_column(col, justify="left" if col in ("column", "group") else "right")
    for column, model in result["model"].items():
        for group, row in model["by_group"].items():
            table.add_row(column, group + (" (small)" if row["small"] else ""), str(row["count"]), *(
                f"{row[m]['value']:.3f}" if row[m]["value"] is not None else "n/a"
                for m in ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")))
    out.print(table)
    for column, model in result["model"].items():
        s = model["summary"]
        flag = " (below 0.8: four-fifths rule)" if s["four_fifths_flag"] else ""
        out.print(f"{column}: demographic-parity difference {s['demographic_parity_difference']:.3f}, ratio "
                  f"{s['demographic_parity_ratio']:.3f}{flag}; equalized-odds difference "
                  f"{s['equalized_odds_difference']:.3f}", highlight=False)
    if "mitigation" in result:
        m = result["mitigation"]
        for row in m["rows"]:
            out.print(f"{row['name']}: accuracy {row['accuracy']:.4f}, DP difference "
                      f"{row['demographic_parity_difference']:.3f}, EO difference "
                      f"{row['equalized_odds_difference']:.3f} (on {m['eval_rows']} held-out rows)", highlight=False)
        out.print(f"thresholds stored in {Path(run) / m['thresholds']}", highlight=False)
    out.print(f"wrote {folder / 'audit.json'} and {folder / 'audit.html'}", highlight=False)


@app.command()
@_friendly
def runs(runs_dir: Annotated[Path, typer.Argument(help="folder of runs")] = Path("runs")) -> None:
    """List runs with their status and headline metric."""
    from dlforge.run import list_runs

    columns = ("run", "status", "task", "model", "epochs", "metric")
    rows = []
    for r in list_runs(runs_dir):
        head = (r.completion() or {}).get("headline")
        rows.append((r.path.name, r.status(), *r.describe(), str(len(r.read_metrics())),
                     f"{head['name']} {head['value']:.4f}" if head else ""))
    if not out.is_terminal:  # piped: plain tab-separated lines for grep, cut and scripts
        print("\n".join("\t".join(row) for row in [columns, *rows]))
        return
    table = Table()
    for col in columns:
        table.add_column(col, no_wrap=col == "run")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@app.command()
@_friendly
def report(run: RunArg) -> None:
    """Write the run's self-contained report.html."""
    from dlforge.report.html import write_report
    from dlforge.run import Run

    out.print(f"wrote {write_report(Run.open(run, complete=False))}")


@app.command()
@_friendly
def serve(run: Annotated[Path | None, typer.Argument(help=f"{RUN_HELP}; default $DLFORGE_RUN or /opt/ml/model "
                                                          "(SageMaker)", show_default=False, callback=_run_dir)] = None,
          host: Annotated[str | None, typer.Option(help="bind address [default: $DLFORGE_HOST or 127.0.0.1]",
                                                   show_default=False)] = None,
          port: Annotated[int | None, typer.Option(help="[default: $DLFORGE_PORT, $AIP_HTTP_PORT, 8080 for "
                                                        "SageMaker, else 8000]", show_default=False)] = None,
          workers: Annotated[int, typer.Option(min=1, help="server processes, each with the model")] = 1,
          backend: Annotated[str, typer.Option(help="torch, or onnx (onnxruntime; exports the run first if "
                                                    "needed)")] = "torch",
          device: str = "cpu",
          set_: Annotated[list[str] | None, typer.Option("--set", help="serve.<field>=<value> over the spec's "
                                                                      "serve: section; repeatable")] = None,
          ) -> None:
    """Serve a run over HTTP: native, KServe V2, SageMaker and Vertex AI routes, /metrics, and a page at /."""
    from dlforge.errors import DlforgeError
    from dlforge.serve import resolve
    from dlforge.serve import serve as run_server

    if backend not in ("torch", "onnx"):
        raise DlforgeError(f"--backend {backend}: choose torch or onnx")
    path, host, port = resolve(run, host, port)
    run_server(path, host, port, workers=workers, backend=backend, device=device, overrides=set_ or [])


@app.command()
@_friendly
def monitor(args: Annotated[list[str], typer.Argument(help="RUN; or `profile RUN` to (re)write its reference "
                                                           "profile", show_default=False, metavar="RUN")],
            data: Annotated[str | None, typer.Option(help="current data, as the task reads it (labels unused); "
                                                          "with profile: the reference data", show_default=False)
                            ] = None,
            from_log: Annotated[Path | None, typer.Option(help="a server's request log (serve.request_log)",
                                                          show_default=False)] = None,
            since: Annotated[str | None, typer.Option(help="with --from-log: only the last 30m, 1h, 7d, ...",
                                                      show_default=False)] = None,
            out_dir: Annotated[Path | None, typer.Option("--out", help="[default: <run>/monitoring/<time>]",
                                                         show_default=False)] = None,
            fail_on_drift: Annotated[bool, typer.Option(help="exit 1 when drift is found (cron, CI)")] = False,
            ) -> None:
    """Drift of current data against the run's reference profile: drift.json and drift.html.
    `dlforge monitor profile RUN [--data SOURCE]` (re)writes the profile (runs trained before profiles)."""
    from dlforge.errors import DlforgeError
    from dlforge.monitor.commands import monitor_run, profile_run
    from dlforge.run import resolve_run

    if args[0] == "profile" and len(args) == 2:
        out.print(f"reference profile: {profile_run(resolve_run(args[1]), data)}", highlight=False)
        return
    if len(args) != 1 or args[0] == "profile":
        raise DlforgeError("usage: dlforge monitor RUN (--data SOURCE | --from-log DB) or dlforge monitor profile RUN")
    result, folder = monitor_run(resolve_run(args[0]), data=data, from_log=from_log, since=since, out=out_dir)
    inputs, emb = result["inputs"], result["embeddings"]
    out.print(f"{'DRIFT' if result['drifted'] else 'no drift'}: {len(inputs['drifted_columns'])} of "
              f"{len(inputs['columns'])} input columns drifted ({', '.join(inputs['drifted_columns']) or 'none'}); "
              f"embeddings MMD p={emb['p_value']:.3g}, domain AUC={emb['domain_auc']:.3f}\n"
              f"report: {folder / 'drift.html'}", highlight=False)
    if fail_on_drift and result["drifted"]:
        raise typer.Exit(1)


@app.command()
@_friendly
def export(run: RunArg,
           fmt: Annotated[str, typer.Option("--format", help="onnx, torchscript or torch-export")] = "onnx",
           out_file: Annotated[Path | None, typer.Option("--out", help="[default: <run>/export/<model file>]",
                                                         show_default=False)] = None,
           atol: Annotated[float, typer.Option(help="largest allowed difference from the PyTorch model")] = 1e-4,
           ) -> None:
    """Export a run's model (dynamic batch axis) and check it against PyTorch on the same inputs."""
    from dlforge.export import export_run

    result = export_run(run, fmt, out=out_file, atol=atol)
    out.print(f"{result.format}: {result.path}  (max abs difference from PyTorch {result.max_abs_diff:.2e}, "
              f"{result.seconds:.1f} s)", highlight=False)


@app.command()
@_friendly
def package(run: RunArg,
            out_dir: Annotated[Path, typer.Option("--out", help="the build context to write (a new or empty folder)")],
            gpu: Annotated[bool, typer.Option("--gpu", help="a CUDA base image and a GPU resource limit")] = False,
            name: Annotated[str | None, typer.Option(help="Kubernetes name [default: the spec's name]",
                                                     show_default=False)] = None,
            image: Annotated[str | None, typer.Option(help="image reference used in the manifests",
                                                      show_default=False)] = None,
            wheel: Annotated[Path | None, typer.Option(help="install this dlforge wheel [default: the running "
                                                            "dlforge's, built from its source tree]",
                                                       show_default=False)] = None,
            overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
            base_image: Annotated[str | None, typer.Option(help="the base image, best pinned by digest: "
                                                                "python:3.12-slim@sha256:... [default: a moving tag]",
                                                           show_default=False)] = None,
            api_key: Annotated[bool, typer.Option("--api-key", help="require the API-key Secret: pods do not start "
                                                                    "without it")] = False) -> None:
    """A Docker build context for a run: Dockerfile, Kubernetes and KServe manifests, a deploy README."""
    from dlforge.package import package_run

    path = package_run(run, out_dir, gpu=gpu, name=name, image=image, wheel=wheel, overwrite=overwrite,
                       base_image=base_image, api_key=api_key)
    out.print(f"build context: {path}\n  docker build -t {image or path.name} {path}\n  see {path / 'README.md'}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of specs (for editor completion)."""
    import dlforge  # noqa: F401  (registers the tasks)
    from dlforge.spec import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
@_friendly
def demo(runs_dir: Annotated[Path, typer.Option(help="where the run is created")] = Path("runs"),
         epochs: Annotated[int | None, typer.Option(help="override train.epochs")] = None) -> None:
    """Train the CNN on built-in digits, evaluate, write the report, print a summary."""
    import dlforge

    spec_file = files("dlforge") / "specs" / "digits.yaml"
    overrides = [f"train.epochs={epochs}"] if epochs else []
    run = dlforge.train(dlforge.load_spec(Path(str(spec_file)), overrides), runs_dir=runs_dir)
    _print_summary(run)


def _print_summary(run: Any) -> None:
    result = run.read_eval() or {}
    table = Table(title=f"run {run.path.name}")
    table.add_column("")
    table.add_column("", justify="right")
    history = run.read_metrics()
    if history:
        table.add_row("epochs", str(len(history)))
        table.add_row("training time", f"{sum(r['time_s'] for r in history):.1f} s")
    if "comparison" not in result:
        for k, v in result.get("metrics", {}).items():
            table.add_row(f"test {k}", f"{v:.4f}")
    out.print(table)
    if "comparison" in result:
        out.print(_metrics_table(result, f"test: {result['data']} ({result['n']} examples)"))
    out.print(f"report: {run.path / 'report.html'}")



@app.command("lr-find")
@_friendly
def lr_find(spec: Annotated[Path, typer.Argument(help="the spec YAML file", show_default=False)],
            set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: train.batch_size=32")
                            ] = None,
            out_dir: Annotated[Path, typer.Option("--out", help="where lr_find.json and lr_find.png go")
                               ] = Path("lr-find"),
            start: Annotated[float, typer.Option(help="first learning rate")] = 1e-7,
            end: Annotated[float, typer.Option(help="last learning rate")] = 10.0,
            steps: Annotated[int, typer.Option(help="optimizer steps, the rate growing exponentially")] = 200) -> None:
    """Learning-rate range test (Smith 2017) on the spec's data and model: a plot and a suggested learning rate."""
    import dlforge
    from dlforge.labs.lr_find import lr_range_test

    result = lr_range_test(dlforge.load_spec(spec, set_ or []), out_dir, start=start, end=end, steps=steps)
    table = Table(title=f"learning-rate range test: {result['steps_taken']} steps ({result['stopped']})")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("suggested train.optimizer.lr (steepest descent)", f"{result['lr']:.3g}")
    table.add_row("one-cycle maximum (scheduler: onecycle)", f"{result['onecycle_max_lr']:.3g}")
    table.add_row("loss minimum at", f"{result['min_loss_lr']:.3g}")
    out.print(table)
    out.print(f"try: dlforge train {spec} --set train.optimizer.lr={result['lr']:.3g}\n"
              f"wrote {out_dir / 'lr_find.png'} and {out_dir / 'lr_find.json'}", highlight=False, soft_wrap=True)


@app.command()
@_friendly
def diagnose(run: RunArg,
             sharpness: Annotated[bool, typer.Option("--sharpness", help="top Hessian eigenvalues of the training "
                                                                         "loss against 2/learning rate")] = False,
             examples: Annotated[int, typer.Option(help="training examples the loss is measured on")] = 512,
             top: Annotated[int, typer.Option(help="how many of the largest eigenvalues")] = 5,
             device: str = "cpu") -> None:
    """Diagnose a finished run; --sharpness adds its Hessian's top eigenvalues (and a section) to its report."""
    from dlforge.errors import DlforgeError

    if not sharpness:
        raise DlforgeError("choose a diagnosis: --sharpness")
    from dlforge.labs.sharpness import diagnose_sharpness

    result = diagnose_sharpness(run, examples=examples, k=top, device=device)
    out.print(result["verdict"], highlight=False, soft_wrap=True)
    out.print(f"eigenvalues: {', '.join(f'{v:.4g}' for v in result['eigenvalues'])}\n"
              f"wrote {Path(run) / 'diagnostics' / 'sharpness.json'}, {Path(run) / 'plots' / 'sharpness.png'} "
              f"and the report's Sharpness section", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- verbs that capabilities add

# The modules that register verbs in `dlforge.registry.COMMANDS` (each registers its own, beside what it does).
VERB_MODULES = ("dlforge.future",)


def add_verbs(typer_app: typer.Typer, commands: Any) -> None:
    """Add each verb of the registry `commands` to `typer_app`, its errors reported as the CLI's own verbs' are."""
    for name in commands.names():
        typer_app.command(name)(_friendly(commands.get(name)))


def _add_registered_verbs() -> None:
    import importlib

    from dlforge.registry import COMMANDS

    for module in VERB_MODULES:
        importlib.import_module(module)
    add_verbs(app, COMMANDS)


_add_registered_verbs()

from dlforge.labs.commands import app as lab_app  # noqa: E402  (after `app`: the sub-app joins it)

app.add_typer(lab_app, name="lab")

if __name__ == "__main__":
    app()
