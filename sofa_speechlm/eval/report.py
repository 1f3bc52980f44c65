"""Stage-6 report: collect every scores.json / outliers.json of one or more experiment dirs and turn
them into the tables of the SOFA paper (Tables 1, 2, 10), as RESULTS.md and results.json.

Rows are evaluated models (attention x fine-tuning x bits x PTQ method). A row's average drop is
taken against its baseline: the full-fine-tuning full-precision row of the same model and attention
when the collection has one (Table 2: LoRA and LoRA+SQ against Full), else its own LM's
full-precision row (Tables 1, 10). Unreadable or missing scores become listed problems; the other
rows are still reported.
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
FP_VARIANT = "fp"
METRIC_LABELS = {"text_ppl": "TextLM PPL", "speech_ppl": "SpeechLM PPL", "asr_wer": "ASR WER", "tts_cer": "TTS CER"}
ATTENTION_LABELS = {"softmax": "Vanilla", "sofa": "SOFA"}
FINETUNE_ORDER = ("full", "lora", "qlora")
FINETUNE_LABELS = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
SETTING_ORDER = ("W16A16", "W8A16", "W8A8", "W4A16", "W4A4")
METHOD_LABELS = {"smoothquant": "SmoothQuant", "affinequant": "AffineQuant", "omniquant": "OmniQuant", "rtn": "RTN"}
MODALITIES = ("text", "speech", "speech+text")


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
    problems: list = field(default_factory=list)


def _tag(expdir: Path, several: bool) -> str:
    return f"{expdir.name}/" if several else ""


def collect(expdirs) -> Collection:
    """Read scores/outliers of every `lm_*/eval/<variant>/` and `eval/reference/<name>/` of each expdir."""
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
                try:
                    scores = read_scores(path)
                except ScoresError as error:
                    found.problems.append(str(error))
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
        for path in sorted(expdir.glob(f"eval/reference/*/{SCORES_JSON}")):
            try:
                scores = read_scores(path)
            except ScoresError as error:
                found.problems.append(str(error))
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
        "latency": latency, "outliers": outliers, "not_computed": not_computed, "problems": list(found.problems),
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
    drop = row.get("avg_drop")
    if drop is None:
        cells.append("-")
    else:
        used = len(row.get("drop_metrics") or [])
        cells.append(fmt_drop(drop) + (f" ({used})" if used < len(DROP_METRICS) else ""))
    return cells


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
