"""Stage 5 for one LM: every planned variant quantized from the same FP model in one process,
each written atomically (built in a hidden temp dir, renamed when complete), finished variants
skipped, a failed variant removed without touching the others."""
from __future__ import annotations

import copy
import hashlib
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from .core import quantize
from .io import QUANT_CONFIG, dir_size, is_complete, read_quant_config, save_quantized
from .plan import Variant

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"  # ESPnet's, as bin.setup_logging


def sha256_of_lines(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def sha256_of_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_up_to_date(variant_dir: Path, variant: Variant, source: dict, calibration_options: dict) -> bool:
    """A complete variant made from the same model file, with the same hyperparameters and (for
    calibrated methods) the same calibration options; anything else is redone."""
    if not is_complete(variant_dir):
        return False
    record = read_quant_config(variant_dir)
    if record.get("hyperparameters") != variant.config.hyperparameters():
        return False
    if (record.get("source") or {}).get("model_sha256") != source.get("model_sha256"):
        return False
    if type(variant.config).needs_calibration:
        recorded = record.get("calibration") or {}
        return all(recorded.get(k) == v for k, v in calibration_options.items())
    return True


def run_variant(fp_model, variant: Variant, output_dir: Path, calibration, calibration_record: Optional[dict],
                source: dict, device: str) -> float:
    """Quantize a copy of ``fp_model`` and write ``output_dir/<variant>``; returns seconds taken."""
    final, partial = output_dir / variant.name, output_dir / f".{variant.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    model = copy.deepcopy(fp_model).to(device)
    needs = type(variant.config).needs_calibration
    quantize(model, variant.config, calibration if needs else [])
    elapsed = time.perf_counter() - start
    save_quantized(model.to("cpu"), partial, preset=variant.preset, calibration=calibration_record if needs else None,
                   source=source, device=device, time_s=round(elapsed, 3))
    if final.exists():  # an incomplete leftover of an interrupted run
        shutil.rmtree(final)
    partial.rename(final)
    return elapsed


def run_all(fp_model, variants, output_dir, calibration, calibration_record, source, device: str = "cpu") -> list[str]:
    """Run ``variants`` in turn, each logged to ``<output_dir>/log/<variant>.log`` too; returns
    the names of the failed ones (their dirs removed, the others kept)."""
    output_dir = Path(output_dir)
    (output_dir / "log").mkdir(parents=True, exist_ok=True)
    failed = []
    for i, variant in enumerate(variants, 1):
        handler = logging.FileHandler(output_dir / "log" / f"{variant.name}.log", mode="w")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        try:
            logging.info(f"[{i}/{len(variants)}] {variant.name}: {variant.config.method} {variant.config.setting} "
                         f"{variant.config.hyperparameters()}")
            elapsed = run_variant(fp_model, variant, output_dir, calibration, calibration_record, source, device)
            logging.info(f"[{i}/{len(variants)}] {variant.name}: done in {elapsed:.1f} s")
        except Exception as exc:
            shutil.rmtree(output_dir / f".{variant.name}.partial", ignore_errors=True)
            shutil.rmtree(output_dir / variant.name, ignore_errors=True)  # a stale older version must not survive
            logging.error(f"[{i}/{len(variants)}] {variant.name} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            failed.append(variant.name)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return failed


def summary_rows(ptq_dirs) -> list[dict]:
    """One row per complete variant under the given ``ptq`` dirs (for the stage-5 summary)."""
    rows = []
    for ptq_dir in ptq_dirs:
        ptq_dir = Path(ptq_dir)
        for variant_dir in sorted(p for p in ptq_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (variant_dir / QUANT_CONFIG).is_file():
                continue
            record = read_quant_config(variant_dir)
            rows.append({
                "lm": ptq_dir.parent.name,
                "variant": variant_dir.name,
                "method": record["method"],
                "setting": record["setting"],
                "execution": record["execution"],
                "size_mb": round(dir_size(variant_dir) / 2**20, 3),
                "time_s": record.get("time_s"),
                "complete": is_complete(variant_dir),
            })
    return rows


def format_table(rows) -> str:
    header = ["lm", "variant", "method", "setting", "execution", "size_mb", "time_s", "complete"]
    table = [header] + [[str(row[k]) for k in header] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in table)


def fp_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters at fp16 (the baseline a W4A16 dir is compared with)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * 2
    return total
