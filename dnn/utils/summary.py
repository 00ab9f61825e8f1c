"""The text of ``model.summary()``."""
from __future__ import annotations


def _rows(layer, indent=""):
    """The layer's row, then (a block's) each of its sublayers' rows, indented."""
    shape = f"(None, {layer.output_dim})" if layer.output_dim is not None else "?"
    label = layer.describe() if not indent or layer.name is None else \
        f"{layer.name}: {layer.describe()}"  # a block's projection says what it is
    rows = [(indent + label, shape, f"{layer.count_params():,}")]
    for sublayer in getattr(layer, "sublayers", ()):
        rows += _rows(sublayer, indent + "  ")
    return rows


def summary_text(model):
    rows = [("Layer", "Output shape", "Params")]
    for layer in model.layers:
        rows += _rows(layer)
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
    rule = "-" * sum(widths)
    lines = [f'Model: "{model.name}"', rule]
    for i, row in enumerate(rows):
        lines.append("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("=" * sum(widths))
    lines.append(rule)
    if model.built:
        total = model.count_params()
        info = model.backend.describe()
        frozen = model.count_params(trainable=False)
        lines.append(f"Total params: {total:,} ({total * model.dtype.itemsize:,} bytes)")
        lines.append(f"Trainable params: {total - frozen:,}")
        lines.append(f"Non-trainable params: {frozen:,}")
        dtype = model.dtype.name if not model.mixed else (
            f"{model.dtype_policy} ({model.dtype.name} weights, {model.compute_dtype.name} "
            f"compute)")
        lines.append(f"Input dim: {model.input_dim}   Backend: {info['backend']}   "
                     f"Device: {info.get('name', info['device'])}   dtype: {dtype}")
    else:
        lines.append("Not built yet: give the model input_dim= (or call fit) to create weights.")
    return "\n".join(lines)
