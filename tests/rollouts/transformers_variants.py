"""Variants of the quick demo BERT for rollout tests, built from its archive
in seconds (nothing downloaded, nothing trained):

- `repacked`: the very same files in another member order: other bytes (a new
  digest, so the registry takes it as a new version), the same model;
- `label_permuted`: the same weights with id2label swapped: every answer
  names the other label;
- `deeper_wider`: more layers and a wider feed-forward that compute the same
  function as the original (same answers, same label order), only with many
  times the arithmetic per call. The added feed-forward units and layers
  write zeros into the residual stream, and layer norms are arranged so that
  they pass a normalized stream through unchanged (see `_deeper_wider`).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path


def _members(zip_path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def repacked(zip_path) -> bytes:
    members = _members(zip_path)
    return _zip(dict(reversed(list(members.items()))))


def label_permuted(zip_path) -> bytes:
    members = _members(zip_path)
    config = json.loads(members["config.json"])
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    swapped = labels[::-1]
    config["id2label"] = {str(i): label for i, label in enumerate(swapped)}
    config["label2id"] = {label: i for i, label in enumerate(swapped)}
    members["config.json"] = json.dumps(config, indent=2).encode()
    return _zip(members)


def deeper_wider(zip_path, *, layers: int = 8, intermediate_size: int = 4096) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source"
        target = Path(folder) / "target"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(source)
        _deeper_wider(source, target, layers=layers, intermediate_size=intermediate_size)
        return _zip({path.name: path.read_bytes() for path in sorted(target.iterdir()) if path.is_file()})


def _deeper_wider(source: Path, target: Path, *, layers: int, intermediate_size: int) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    small = BertForSequenceClassification.from_pretrained(source, local_files_only=True).eval()
    config = BertConfig.from_pretrained(source, local_files_only=True)
    depth, width = config.num_hidden_layers, config.intermediate_size
    assert layers > depth and intermediate_size > width
    config.num_hidden_layers, config.intermediate_size = layers, intermediate_size
    torch.manual_seed(0)
    big = BertForSequenceClassification(config).eval()

    old, new = small.state_dict(), big.state_dict()
    with torch.no_grad():
        for name, tensor in old.items():
            if name.startswith("bert.encoder.layer."):
                continue
            new[name].copy_(tensor)
        for index in range(depth):
            prefix = f"bert.encoder.layer.{index}."
            for name, tensor in old.items():
                if not name.startswith(prefix):
                    continue
                if name.endswith("intermediate.dense.weight") or name.endswith("intermediate.dense.bias"):
                    new[name][:width].copy_(tensor)  # the added units keep their random weights...
                elif name.endswith("output.dense.weight") and ".attention." not in name:
                    new[name].zero_()  # ...and write nothing to the residual stream
                    new[name][:, :width].copy_(tensor)
                else:
                    new[name].copy_(tensor)
        # The added layers add nothing (zero attention and feed-forward outputs)
        # and re-normalize a stream that is already normalized: the original last
        # layer's final layer-norm scale and shift move to the last added layer.
        last = f"bert.encoder.layer.{depth - 1}.output.LayerNorm."
        scale, shift = new[last + "weight"].clone(), new[last + "bias"].clone()
        new[last + "weight"].fill_(1.0)
        new[last + "bias"].zero_()
        for index in range(depth, layers):
            prefix = f"bert.encoder.layer.{index}."
            for part in ("attention.output.dense", "output.dense"):
                new[prefix + part + ".weight"].zero_()
                new[prefix + part + ".bias"].zero_()
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                new[prefix + norm + ".weight"].fill_(1.0)
                new[prefix + norm + ".bias"].zero_()
        final = f"bert.encoder.layer.{layers - 1}.output.LayerNorm."
        new[final + "weight"].copy_(scale)
        new[final + "bias"].copy_(shift)
    big.load_state_dict(new)
    big.save_pretrained(target)
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(target)
