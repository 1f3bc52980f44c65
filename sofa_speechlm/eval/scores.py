"""scores.json of one evaluated model (CONTRACTS.md, stage 6), written after every metric group so
that an interrupted evaluation resumes: a group whose settings are unchanged is not redone."""

from __future__ import annotations

import json
import os
from pathlib import Path

SCORES_FILE = "scores.json"
# metric group -> the metrics it yields
GROUPS = {
    "textlm": ("text_ppl", "text_acc"),
    "speechlm": ("speech_ppl", "speech_acc"),
    "asr": ("asr_wer",),
    "tts": ("tts_cer",),
    "latency": (),
}


class Scores:
    """The scores.json of one model; `done(group, settings)` says whether a group can be skipped."""

    def __init__(self, output_dir: str | Path, header: dict):
        self.path = Path(output_dir) / SCORES_FILE
        old = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.data = {**header, "metrics": {}, "not_computed": {}, "subsets": {}, "decoding": {}, "settings": {}}
        if all(old.get(key) == value for key, value in header.items()):
            for key in ("metrics", "not_computed", "subsets", "decoding", "settings"):
                self.data[key].update(old.get(key, {}))
            if "latency" in old:
                self.data["latency"] = old["latency"]

    def done(self, group: str, settings: dict) -> bool:
        if self.data["settings"].get(group) != settings:
            return False
        if group == "latency":
            return "latency" in self.data
        return all(metric in self.data["metrics"] for metric in GROUPS[group])

    def record(self, group: str, settings: dict, metrics: dict | None = None, not_computed: str | None = None,
               subset: dict | None = None, decoding: dict | None = None, latency: dict | None = None) -> None:
        for metric in GROUPS[group]:
            self.data["metrics"].pop(metric, None)
            self.data["not_computed"].pop(metric, None)
            if not_computed is not None:
                self.data["not_computed"][metric] = not_computed
        self.data["metrics"].update(metrics or {})
        if subset is not None:
            self.data["subsets"][group] = subset
        self.data["decoding"].update(decoding or {})
        if latency is not None:
            self.data["latency"] = latency
        self.data["settings"][group] = settings
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
