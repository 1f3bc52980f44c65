"""Stage-6 report: collect every scores.json / outliers.json of one or more experiment dirs and turn
them into the tables of the SOFA paper (Tables 1, 2, 10), as RESULTS.md and results.json.

Rows are evaluated models (attention x fine-tuning x bits x PTQ method). A row's average drop is
taken against its baseline: the full-fine-tuning full-precision row of the same model and attention
when the collection has one (Table 2: LoRA and LoRA+SQ against Full), else its own LM's
full-precision row (Tables 1, 10). Unreadable or missing scores become listed problems; the other
rows are still reported.

With stage 2c's quantized speech tokenizers (docs/tokenizer_ptq.md), each model's scores on a
tokenizer's test units (`lm_*/eval_tokenizer_ptq/<tokenizer>/<variant>/scores.json`) form a table
of their own, each row's drop taken against the same model on the full-precision units.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sofa_speechlm.eval.drop import DROP_METRICS, metric_drop

SCORES_JSON = "scores.json"
OUTLIERS_JSON = "outliers.json"
TOKENIZER_PTQ_EVAL = "eval_tokenizer_ptq"  # lm_*/<this>/<tokenizer>/<variant>/scores.json (run.sh stage 6)
TOKENIZER_PTQ_REPORT = "tokenizer_ptq/{}/report.json"  # stage 2c's report of one tokenizer, in the expdir
FP_VARIANT = "fp"
FP_TOKENIZER = "full precision"
METRIC_LABELS = {"text_ppl": "TextLM PPL", "speech_ppl": "SpeechLM PPL", "asr_wer": "ASR WER", "tts_cer": "TTS CER"}
ATTENTION_LABELS = {"softmax": "Vanilla", "sofa": "SOFA"}
FINETUNE_ORDER = ("full", "lora", "qlora")
FINETUNE_LABELS = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
SETTING_ORDER = ("W16A16", "W8A16", "W8A8", "W4A16", "W4A4")
METHOD_LABELS = {"smoothquant": "SmoothQuant", "affinequant": "AffineQuant", "omniquant": "OmniQuant", "rtn": "RTN"}
MODALITIES = ("text", "speech", "speech+text")
TOKENIZER_METRICS = ("speech_ppl", "asr_wer")  # what stage 6 scores on a quantized tokenizer's units


class ScoresError(ValueError):
    """A scores.json that cannot be read or is not of the stage-6 schema."""


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_scores(path: Path) -> dict:
    """A scores.json checked against CONTRACTS.md's schema; ScoresError names the file and the fault."""
    try:
        scores = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScoresError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(scores, dict):
        raise ScoresError(f"{path}: expected a JSON object, got {type(scores).__name__}")
    missing = [key for key in ("lm", "variant", "metrics") if key not in scores]
    if missing:
        raise ScoresError(f"{path}: not a stage-6 scores.json (missing {', '.join(missing)}; see CONTRACTS.md)")
    if not isinstance(scores["metrics"], dict):
        raise ScoresError(f"{path}: 'metrics' must be an object of metric -> number")
    bad = [name for name, value in scores["metrics"].items() if not _number(value)]
    if bad:
        raise ScoresError(f"{path}: metric(s) {', '.join(bad)} are not finite numbers")
    for key in ("not_computed", "subsets", "decoding"):
        if not isinstance(scores.get(key, {}), dict):
            raise ScoresError(f"{path}: '{key}' must be an object")
    latency = scores.get("latency")
    if latency is not None and not (isinstance(latency, dict) and _number(latency.get("ms_per_token_bs1"))):
        raise ScoresError(f"{path}: 'latency' must hold a number 'ms_per_token_bs1'")
    return scores


@dataclass
class Collection:
    """Everything found under the experiment dirs."""

    expdirs: list
    rows: list = field(default_factory=list)  # dicts: scores + "expdir", "path", "key"
    references: list = field(default_factory=list)
    outliers: list = field(default_factory=list)  # dicts: outliers.json + "expdir", "path", "key"
    tokenizer_ptq: list = field(default_factory=list)  # dicts: scores + "expdir", "path", "key", "tokenizer", "dev_uer"
    problems: list = field(default_factory=list)


def _tag(expdir: Path, several: bool) -> str:
    return f"{expdir.name}/" if several else ""


def _read_or_note(path: Path, problems: list) -> dict | None:
    """read_scores, or None with the fault added to `problems`."""
    try:
        return read_scores(path)
    except ScoresError as error:
        problems.append(str(error))
        return None


def tokenizer_dev_uer(expdir: Path, tokenizer: str, problems: list) -> float | None:
    """The dev unit error rate of a stage-2c tokenizer from its report.json (None when there is none)."""
    path = expdir / TOKENIZER_PTQ_REPORT.format(tokenizer)
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        matches = [r for r in rows if f"{r['method']}_{str(r['setting']).lower()}" == tokenizer]
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"{path}: not a tokenizer PTQ report ({error!r})")
        return None
    if len(matches) != 1 or not _number(matches[0].get("dev_uer")):
        problems.append(f"{path}: no single {tokenizer} row with a dev_uer")
        return None
    return matches[0]["dev_uer"]


def collect_tokenizer_ptq(expdir: Path, lm_dir: Path, tag: str, found: Collection) -> None:
    """The scores of `lm_dir`'s models on the test units of each quantized tokenizer, into found.tokenizer_ptq."""
    dev_uer = {}
    for path in sorted(lm_dir.glob(f"{TOKENIZER_PTQ_EVAL}/*/*/{SCORES_JSON}")):
        scores = _read_or_note(path, found.problems)
        if scores is None:
            continue
        tokenizer = path.parent.parent.name
        if tokenizer not in dev_uer:
            dev_uer[tokenizer] = tokenizer_dev_uer(expdir, tokenizer, found.problems)
        key = f"{tag}{scores['lm'] or lm_dir.name}/{scores['variant']}"
        found.tokenizer_ptq.append({**scores, "expdir": str(expdir), "path": str(path), "key": key,
                                    "tokenizer": tokenizer, "dev_uer": dev_uer[tokenizer]})


def collect(expdirs) -> Collection:
    """Read scores/outliers of every `lm_*/eval/<variant>/`, `lm_*/eval_tokenizer_ptq/<tokenizer>/<variant>/`
    and `eval/reference/<name>/` of each expdir."""
    expdirs = [Path(e) for e in expdirs]
    found = Collection(expdirs)
    several = len(expdirs) > 1
    for expdir in expdirs:
        if not expdir.is_dir():
            found.problems.append(f"{expdir}: experiment dir not found")
            continue
        for lm_dir in sorted(p for p in expdir.glob("lm_*") if p.is_dir()):
            variants = [p.name for p in sorted((lm_dir / "ptq").glob("*")) if (p / ".done").is_file()]
            # A trained LM experiment (ESPnet's stats dir, also lm_*, has a config.yaml but no model).
            if (lm_dir / "valid.loss.ave.pth").is_file() or (lm_dir / "merged").is_dir():
                variants.insert(0, FP_VARIANT)
            for variant in variants:
                if not (lm_dir / "eval" / variant / SCORES_JSON).is_file():
                    found.problems.append(f"{lm_dir / 'eval' / variant / SCORES_JSON}: missing ({lm_dir.name} {variant} not evaluated)")
            for path in sorted(lm_dir.glob(f"eval/*/{SCORES_JSON}")):
                scores = _read_or_note(path, found.problems)
                if scores is None:
                    continue
                key = f"{_tag(expdir, several)}{scores['lm'] or lm_dir.name}/{scores['variant']}"
                found.rows.append({**scores, "expdir": str(expdir), "path": str(path), "key": key})
            for path in sorted(lm_dir.glob(f"eval/*/{OUTLIERS_JSON}")):
                try:
                    outliers = json.loads(path.read_text(encoding="utf-8"))
                    if "per_layer" not in outliers or "summary" not in outliers:
                        raise ValueError("no per_layer/summary: not written by bin.outliers")
                except (OSError, ValueError) as error:
                    found.problems.append(f"{path}: {error}")
                    continue
                key = f"{_tag(expdir, several)}{outliers.get('lm', lm_dir.name)}/{outliers.get('variant', path.parent.name)}"
                found.outliers.append({**outliers, "expdir": str(expdir), "path": str(path), "key": key})
            collect_tokenizer_ptq(expdir, lm_dir, _tag(expdir, several), found)
        for path in sorted(expdir.glob(f"eval/reference/*/{SCORES_JSON}")):
            scores = _read_or_note(path, found.problems)
            if scores is None:
                continue
            found.references.append({**scores, "expdir": str(expdir), "path": str(path), "key": f"{_tag(expdir, several)}{scores['variant']}"})
    return found


def lm_base(row: dict) -> str:
    """The LM name without its attention and fine-tuning words (lm_tiny_sofa_lora -> lm_tiny)."""
    drop = {row.get("attention"), row.get("finetune"), "sofa", "vanilla", "softmax", *FINETUNE_ORDER}
    return "_".join(part for part in str(row.get("lm")).split("_") if part not in drop)


def _family(row: dict) -> tuple:
    """Rows of one model and attention, whatever their fine-tuning (experiment dirs may differ)."""
    return (row.get("model_type"), lm_base(row), row.get("attention"))


def _sort_key(row: dict) -> tuple:
    finetune = row.get("finetune", "full")
    setting = str(row.get("setting") or "W16A16").upper()
    return (
        row.get("model_type") or "", lm_base(row), row.get("attention") != "softmax", row.get("attention") or "",
        FINETUNE_ORDER.index(finetune) if finetune in FINETUNE_ORDER else len(FINETUNE_ORDER), finetune,
        row["variant"] != FP_VARIANT, SETTING_ORDER.index(setting) if setting in SETTING_ORDER else -1, row.get("method") or "",
        row["key"],
    )


def assign_baselines(rows: list) -> None:
    """Set each row's "baseline" (key), "avg_drop" and "drop_metrics" (design.md's average drop)."""
    fp = {(r["expdir"], r["lm"]): r for r in rows if r["variant"] == FP_VARIANT}
    full_fp = {_family(r): r for r in rows if r["variant"] == FP_VARIANT and r.get("finetune", "full") == "full"}
    for row in rows:
        baseline = full_fp.get(_family(row)) or fp.get((row["expdir"], row["lm"]))
        if baseline is None or baseline is row:
            row.update(baseline=None, avg_drop=None, drop_metrics=[])
            continue
        drop, used = metric_drop(baseline["metrics"], row["metrics"], DROP_METRICS)
        row.update(baseline=baseline["key"], avg_drop=drop, drop_metrics=used)


def environment() -> dict:
    """What ESPnet's RESULTS.md header records, plus transformers and the hardware."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def installed(package):
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    repo = Path(__file__).resolve().parents[2]

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    cpu = platform.processor() or platform.machine()
    try:
        names = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(), "pytorch": torch.__version__, "transformers": installed("transformers"),
        "espnet": installed("espnet"), "git_hash": git("rev-parse", "HEAD"), "commit_date": git("log", "-1", "--format=%cd"),
        "cpu": cpu, "gpu": gpu,
    }


def _row_record(row: dict) -> dict:
    keep = ("key", "lm", "variant", "expdir", "path", "model_type", "attention", "finetune", "method", "setting",
            "execution", "metrics", "not_computed", "subsets", "decoding", "latency", "baseline", "avg_drop", "drop_metrics")
    return {k: row.get(k) for k in keep}


def _tokenizer_ptq_record(scores: dict, tokenizer: str, dev_uer: float | None, baseline: dict | None) -> dict:
    """One row of the tokenizer-PTQ table: `scores` (a model on `tokenizer`'s units) against `baseline`."""
    drop, used = metric_drop(baseline["metrics"], scores["metrics"], TOKENIZER_METRICS) if baseline else (None, [])
    return {**{k: scores.get(k) for k in ("key", "lm", "variant", "method", "setting", "execution", "path")},
            "tokenizer": tokenizer, "dev_uer": dev_uer,
            "metrics": {m: scores["metrics"][m] for m in TOKENIZER_METRICS if m in scores["metrics"]},
            "not_computed": {m: why for m, why in (scores.get("not_computed") or {}).items() if m in TOKENIZER_METRICS},
            "baseline": baseline["path"] if baseline else None, "avg_drop": drop, "drop_metrics": used}


def tokenizer_ptq_rows(rows: list, entries: list) -> list:
    """The tokenizer-PTQ table: per model (in the main table's order) its main-table row, on the full-precision
    units, then one row per quantized tokenizer with the drop against that row."""
    by_key = {r["key"]: r for r in rows}
    groups = {}
    for entry in entries:
        groups.setdefault(entry["key"], []).append(entry)
    table = []
    for key, group in sorted(groups.items(), key=lambda item: _sort_key(item[1][0])):
        base = by_key.get(key)
        if base is not None:
            table.append(_tokenizer_ptq_record(base, FP_TOKENIZER, None, None))
        table += [_tokenizer_ptq_record(e, e["tokenizer"], e["dev_uer"], base) for e in sorted(group, key=lambda e: e["tokenizer"])]
    return table


def build_results(found: Collection, env: dict | None = None) -> dict:
    """results.json: the numbers RESULTS.md shows."""
    rows = sorted(found.rows, key=_sort_key)
    assign_baselines(rows)
    by_key = {r["key"]: r for r in rows}
    latency = []
    for row in rows:
        if row.get("latency"):
            base = by_key.get(row.get("baseline") or "") if row["variant"] != FP_VARIANT else None
            fp_ms = (base or {}).get("latency", {}) or {}
            ms = row["latency"]["ms_per_token_bs1"]
            latency.append({"key": row["key"], "execution": row["latency"].get("execution", row.get("execution")),
                            "ms_per_token_bs1": ms,
                            "speedup_vs_baseline": fp_ms["ms_per_token_bs1"] / ms if fp_ms.get("ms_per_token_bs1") else None})
    outliers = [
        {"key": o["key"], "lm": o.get("lm"), "variant": o.get("variant"), "attention": o.get("attention"), "finetune": o.get("finetune"),
         "path": o["path"], "summary": o["summary"], "sources": o.get("sources", {})}
        for o in sorted(found.outliers, key=lambda o: o["key"])
    ]
    not_computed = [{"key": r["key"], "metric": m, "reason": why} for r in rows + found.references for m, why in (r.get("not_computed") or {}).items()]
    return {
        "environment": env if env is not None else environment(),
        "expdirs": [str(e) for e in found.expdirs],
        "rows": [_row_record(r) for r in rows],
        "reference": [_row_record(r) for r in found.references],
        "latency": latency, "outliers": outliers, "not_computed": not_computed,
        "tokenizer_ptq": tokenizer_ptq_rows(rows, found.tokenizer_ptq), "problems": list(found.problems),
    }


# ---------------------------------------------------------------- markdown


def fmt_metric(value) -> str:
    return f"{value:.2f}"


def fmt_drop(value) -> str:
    return f"{100 * value:.2f}%"


def fmt_bits(setting: str | None) -> str:
    setting = str(setting or "W16A16").upper()
    if "A" in setting and setting.startswith("W"):
        weight, act = setting[1:].split("A", 1)
        return f"W{weight}/A{act}"
    return setting


def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def main_table_cells(row: dict, notes: dict) -> list:
    """The cells of one row of the main table; `notes` numbers the not-computed reasons."""
    bits = fmt_bits(row.get("setting")) + (" (sim.)" if row.get("execution") == "simulated" else "")
    method = "-" if row["variant"] == FP_VARIANT else METHOD_LABELS.get(row.get("method"), row.get("method") or row["variant"])
    cells = [row["key"].rsplit("/", 1)[0], ATTENTION_LABELS.get(row.get("attention"), row.get("attention") or "?"),
             FINETUNE_LABELS.get(row.get("finetune"), row.get("finetune") or "?"), bits, method]
    for metric in DROP_METRICS:
        if metric in row["metrics"]:
            cells.append(fmt_metric(row["metrics"][metric]))
        elif metric in (row.get("not_computed") or {}):
            number = notes.setdefault((row["key"], metric), len(notes) + 1)
            cells.append(f"n/c [{number}]")
        else:
            cells.append("–")
    cells.append(fmt_avg_drop(row, DROP_METRICS))
    return cells


def fmt_avg_drop(row: dict, metrics) -> str:
    """The row's average drop, with a suffix (n) when it is over fewer than all of `metrics`; - without one."""
    drop = row.get("avg_drop")
    if drop is None:
        return "-"
    used = len(row.get("drop_metrics") or [])
    return fmt_drop(drop) + (f" ({used})" if used < len(metrics) else "")


def variant_label(row: dict) -> str:
    """FP, or a stage-5 variant's bits and PTQ method (W8/A8 SmoothQuant)."""
    if row["variant"] == FP_VARIANT:
        return "FP"
    return f"{fmt_bits(row.get('setting'))} {METHOD_LABELS.get(row.get('method'), row.get('method') or row['variant'])}"


def tokenizer_ptq_lines(table: list) -> list:
    """The RESULTS.md section of the models on the quantized tokenizers' units; none without such scores."""
    if not table:
        return []
    header = ["Model", "LM variant", "Tokenizer", "Tokenizer dev UER (↓)"] + [f"{METRIC_LABELS[m]} (↓)" for m in TOKENIZER_METRICS] + ["Avg drop (↓)"]
    body = []
    for row in table:
        cells = [row["key"].rsplit("/", 1)[0], variant_label(row), row["tokenizer"],
                 fmt_metric(row["dev_uer"]) if row["dev_uer"] is not None else "–"]
        cells += [fmt_metric(row["metrics"][m]) if m in row["metrics"] else "n/c" if m in row["not_computed"] else "–"
                  for m in TOKENIZER_METRICS]
        body.append(cells + [fmt_avg_drop(row, TOKENIZER_METRICS)])
    return ["## Speech tokenizer PTQ: the LMs on the units of a quantized HuBERT tokenizer", ""] + _table(header, body) + [
        "", "Each row: one model of the main table (the LM and its variant: FP = full precision, else its stage-5 PTQ "
        "variant) scored on the test units of one speech tokenizer. `full precision`: the stage-2 units (the model's "
        "main-table row); `<method>_<setting>`: the test units re-extracted with stage 2c's quantized HuBERT tokenizer "
        "(docs/tokenizer_ptq.md). Tokenizer dev UER: % of the dev frames whose unit differs from the full-precision "
        "tokenizer's (stage 2c's report.json). WER in %. Avg drop: over SpeechLM PPL and ASR WER (a suffix (1) marks "
        "one), against the same model and variant on the full-precision units. n/c: not computed (reason in "
        "results.json); –: not scored.", ""]


def render_markdown(results: dict, plots: list | None = None) -> str:
    env = results["environment"]
    lines = ["<!-- Generated by python -m sofa_speechlm.bin.report -->", "# RESULTS", "## Environments"]
    lines += [f"- date: `{env['date']}`", f"- python version: `{env['python']}`", f"- espnet version: `espnet {env['espnet']}`",
              f"- pytorch version: `pytorch {env['pytorch']}`", f"- transformers version: `transformers {env['transformers']}`",
              f"- Git hash: `{env['git_hash']}`", f"  - Commit date: `{env['commit_date']}`", f"- CPU: `{env['cpu']}`", f"- GPU: `{env['gpu']}`"]
    lines += ["", f"Experiment dirs: {', '.join(f'`{e}`' for e in results['expdirs'])}", ""]

    lines += ["## SpeechLM: attention x fine-tuning x bits x PTQ method", ""]
    notes = {}
    header = ["Model", "Attention", "Fine-tuning", "#Bits", "PTQ method"] + [f"{METRIC_LABELS[m]} (↓)" for m in DROP_METRICS] + ["Avg drop (↓)"]
    body = [main_table_cells(row, notes) for row in results["rows"]]
    lines += _table(header, body) if body else ["No evaluated model was found (see Problems)."]
    lines += ["", "WER and CER in %. Avg drop: `(prod_i variant_i / baseline_i) ** (1/n) - 1` over the metrics both rows have "
              "(a suffix (n) marks fewer than four), against the row's baseline below. (sim.): quantized execution simulated "
              "(fake-quantized weights/activations in floating point), not integer kernels. n/c: not computed (reasons below); –: not scored.", ""]
    # Only the baselines that are not the row's own full-precision model need naming.
    baselines = sorted({(r["key"], r["baseline"]) for r in results["rows"]
                        if r.get("baseline") and r["baseline"] != r["key"].rsplit("/", 1)[0] + f"/{FP_VARIANT}"})
    lines += ["Baseline of each row: its own full-precision (W16/A16) model"
              + ("; except " + "; ".join(f"`{k}` against `{b}`" for k, b in baselines) if baselines else "") + ".", ""]
    lines += tokenizer_ptq_lines(results.get("tokenizer_ptq") or [])

    if results["reference"]:
        lines += ["## TTS CER in context (reference speech)", ""]
        ref_rows = []
        for ref in results["reference"]:
            cer = ref["metrics"].get("tts_cer")
            subset = (ref.get("subsets") or {}).get("tts")
            ref_rows.append([ref["key"], fmt_metric(cer) if cer is not None else "n/c",
                             f"{subset['scored']}/{subset['of']}" if isinstance(subset, dict) and "scored" in subset else "?"])
        lines += _table(["Reference", "TTS CER", "Utterances scored"], ref_rows)
        lines += ["", "ground_truth: Whisper on the recorded test speech; resynthesis: the vocoder on the reference units "
                  "(the ceiling for any LM's TTS CER).", ""]

    if results["latency"]:
        lines += ["## Latency", ""]
        lines += _table(["Model / variant", "Execution", "ms/token (bs=1)", "Speed-up vs baseline"],
                        [[l["key"], l["execution"], f"{l['ms_per_token_bs1']:.2f}",
                          f"{l['speedup_vs_baseline']:.2f}x" if l["speedup_vs_baseline"] else "-"] for l in results["latency"]])
        lines += [""]

    if results["outliers"]:
        lines += ["## Outliers (max ‖x‖∞ / mean kurtosis)", ""]
        header = ["Model / variant", "Attention"] + [f"{m} max ‖x‖∞" for m in MODALITIES] + [f"{m} kurtosis" for m in MODALITIES]
        out_rows = []
        for o in results["outliers"]:
            cells = [o["key"], ATTENTION_LABELS.get(o.get("attention"), o.get("attention"))]
            cells += [fmt_metric(o["summary"][m]["max_inf_norm"]) if m in o["summary"] else "–" for m in MODALITIES]
            cells += [fmt_metric(o["summary"][m]["mean_kurtosis"]) if m in o["summary"] and o["summary"][m]["mean_kurtosis"] is not None else "–" for m in MODALITIES]
            out_rows.append(cells)
        lines += _table(header, out_rows)
        lines += ["", "Hooks on every decoder layer's output, attention output projection, FFN output projection and LayerNorms; "
                  "per sequence over the modality's positions (text: text tokens of textLM lines; speech: unit tokens of speechLM "
                  "lines; speech+text: all of ASR and TTS lines): infinity norm and Pearson kurtosis (Gaussian 3); mean over "
                  "sequences per module; max ‖x‖∞ = max over modules, kurtosis = mean over modules.", ""]

    lines += ["## Scored subsets and decoding", ""]
    grouped = {}  # (subsets, decoding) -> the rows scored that way (usually all of them)
    for row in results["rows"] + results["reference"]:
        subsets = ", ".join(f"{task} {s.get('scored')}/{s.get('of')}" for task, s in sorted((row.get("subsets") or {}).items()) if isinstance(s, dict))
        decoding = ", ".join(f"{k}={v}" for k, v in sorted((row.get("decoding") or {}).items()))
        grouped.setdefault((subsets or "?", decoding or "-"), []).append(row["key"])
    sub_rows = [[", ".join(keys) if len(keys) <= 3 else f"{len(keys)} rows: {keys[0]}, ..., {keys[-1]}", subsets, decoding]
                for (subsets, decoding), keys in grouped.items()]
    lines += _table(["Model / variant", "Subsets scored", "Decoding"], sub_rows) if sub_rows else ["-"]
    lines += [""]

    if results["not_computed"]:
        lines += ["## Not computed", ""]
        numbered = {key: number for key, number in notes.items()}
        for item in results["not_computed"]:
            number = numbered.get((item["key"], item["metric"]))
            mark = f"[{number}] " if number else ""
            lines.append(f"- {mark}`{item['key']}` {METRIC_LABELS.get(item['metric'], item['metric'])}: {item['reason']}")
        lines += [""]

    if results["problems"]:
        lines += ["## Problems", ""] + [f"- {p}" for p in results["problems"]] + [""]

    if plots:
        lines += ["## Plots", ""] + [f"- [{Path(p).name}]({p})" for p in plots] + [""]
    return "\n".join(lines)
