"""The importable tasks behind ``train.py`` and ``eval.py``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from facerec.callbacks import RunConfigRecord, VerificationCallback
from facerec.callbacks.interrupt import interrupt_exit_status
from facerec.eval.baseline import raw_pixel_metrics
from facerec.eval.metric import METRIC_KEYS
from facerec.export import check_onnx, export_onnx
from facerec.models.checkpoint import read_training_checkpoint
from facerec.module import FaceRecognitionModule, without_weight_sources
from facerec.resume import check_resumed_classes, check_resumed_config
from facerec.run_dir import hold_run_dir
from facerec.runs import (
    check_devices,
    check_monitor,
    check_output_dir,
    output_dirs,
    resolve_ckpt_path,
    set_sweep_group,
)
from facerec.tables import print_table

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("accuracy", "accuracy_std", "best_threshold", "auc", "eer", "tar@far=1e-3", "tar@far=1e-4")


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiates every entry of a ``name: {_target_: ...}`` config group (``None`` → [])."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]


def verification_callback(trainer: L.Trainer) -> VerificationCallback:
    """The trainer's verification callback."""
    for callback in trainer.callbacks:
        if isinstance(callback, VerificationCallback):
            return callback
    raise ValueError("no VerificationCallback configured: add callbacks.verification")


def logged_results(
    logged: Mapping[str, Any] | Iterable[Mapping[str, Any]], names: Iterable[str]
) -> dict[str, dict[str, float]]:
    """The verification metrics of sets ``names`` as the ``VerificationCallback`` logged them (``val/<set>/<key>``).

    Args:
        logged: What ``trainer.validate`` returns (one dict per dataloader) or ``trainer.callback_metrics``.
        names: The sets' names.

    Returns:
        ``{set name: {key: value}}`` for every key of :data:`facerec.eval.metric.METRIC_KEYS`.
    """
    values = dict(logged) if isinstance(logged, Mapping) else {k: v for outputs in logged for k, v in outputs.items()}
    return {name: {key: float(values[f"val/{name}/{key}"]) for key in METRIC_KEYS} for name in names}


def format_table(results: dict[str, dict[str, float]], title: str | None = None) -> Table:
    """Verification metrics as a rich table, one row per set (4 decimals, NaN where a metric is missing)."""
    table = Table(title=title, title_justify="left")
    table.add_column("set")
    for key in TABLE_COLUMNS:
        table.add_column(key, justify="right", no_wrap=True, min_width=len(key))
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics.get(key, math.nan):.4f}" for key in TABLE_COLUMNS))
    return table


@rank_zero_only
def report(results: dict[str, dict[str, float]], metrics_file: str | None, title: str) -> None:
    """Prints the table and writes the metrics as JSON (rank zero only)."""
    print_table(format_table(results, title))
    if metrics_file:
        Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_file).write_text(json.dumps(results, indent=2, sort_keys=True))
        log.info("metrics written to %s", metrics_file)


def train(cfg: DictConfig) -> float | None:
    """Trains a model as configured, evaluates its verification sets and reports them.

    Returns:
        The value of ``cfg.monitor`` after training (for Hydra sweepers), or None if unset.
    """
    check_output_dir(cfg.paths.output_dir)
    check_devices(cfg.trainer)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)
    checkpoint = read_training_checkpoint(ckpt_path) if ckpt_path else None
    with hold_run_dir(cfg.paths.output_dir, cfg, resuming=ckpt_path is not None):
        for path in output_dirs(cfg):
            check_output_dir(path)
        return _train(cfg, ckpt_path, checkpoint)


def _train(cfg: DictConfig, ckpt_path: str | None, checkpoint: dict | None) -> float | None:
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if ckpt_path:  # the checkpoint holds the weights: don't re-read backbone.pth or timm's cache
        cfg.backbone = without_weight_sources(cfg.backbone)
    set_sweep_group(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    check_monitor(cfg.monitor, datamodule.val_set_paths)
    datamodule.prepare_data()
    class_names = datamodule.class_names
    if checkpoint is not None:
        check_resumed_classes(checkpoint, class_names, ckpt_path)
        check_resumed_config(checkpoint, run_config, ckpt_path, force=cfg.force_resume)
    model = instantiate(cfg.model, num_classes=len(class_names), class_names=class_names, _recursive_=False)
    callbacks = [*instantiate_all(cfg.get("callbacks")), RunConfigRecord(run_config)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_all(cfg.get("logger")))
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)
    _write_classes(Path(cfg.paths.output_dir) / "classes.json", class_names)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit as stop:
        raise SystemExit(interrupt_exit_status(stop, trainer)) from stop
    check_trained(trainer, checkpoint["global_step"] if checkpoint else 0)
    check_checkpoints_written(trainer)
    names = [val_set.name for val_set in datamodule.val_sets]
    if names and verification_callback(trainer).evaluated_at_step != trainer.global_step:
        results = logged_results(trainer.validate(model, datamodule=datamodule, verbose=False), names)
    else:  # the last epoch validated the final weights: its logged values are still the trainer's
        results = logged_results(trainer.callback_metrics, names)
    if cfg.report_baseline:
        for val_set in datamodule.val_sets:
            results[f"{val_set.name} (raw pixels)"] = raw_pixel_metrics(val_set, datamodule.image_size, datamodule.crop)
    report(results, cfg.metrics_file, "Verification on held-out identities")
    monitored = trainer.callback_metrics.get(cfg.monitor) if cfg.monitor else None
    return None if monitored is None else float(monitored)


def check_trained(trainer: L.Trainer, start_step: int) -> None:
    """Fails if ``fit`` took no optimizer step, e.g. a resume from a checkpoint that already reached ``max_epochs``.

    Raises:
        RuntimeError: Naming the step and epoch limits to raise.
    """
    if trainer.global_step <= start_step:
        raise RuntimeError(
            f"training took no step (it ended at step {trainer.global_step}, epoch {trainer.current_epoch}, "
            f"where it started): raise trainer.max_epochs (now {trainer.max_epochs}) or trainer.max_steps "
            f"(now {trainer.max_steps}) to train further"
        )


def check_checkpoints_written(trainer: L.Trainer) -> None:
    """Fails if a checkpoint the run's ``ModelCheckpoint`` callbacks report is not on disk.

    Lightning's checkpoint writer swallows a ``PermissionError``, so a run whose checkpoint folder
    turned unwritable would otherwise end "successfully" with nothing saved.

    Raises:
        OSError: Naming the missing checkpoint and its folder.
    """
    for callback in trainer.checkpoint_callbacks:
        for path in (callback.last_model_path, callback.best_model_path):
            if path and "://" not in path and trainer.is_global_zero and not Path(path).is_file():
                raise OSError(f"checkpoint {path} was not written: check that {Path(path).parent} is writable")


@rank_zero_only
def _write_classes(path: Path, class_names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(class_names))


def evaluation_input(data: DictConfig, hparams: Mapping, ckpt_path: str | Path) -> tuple[list[int], Any]:
    """The input size and face crop to evaluate at: ``data.image_size`` / ``data.crop`` if set, else the checkpoint's.

    Evaluating at another size or crop than the training one is allowed (e.g. to measure its effect);
    a warning names both.
    """
    chosen = []
    for key, trained in (("image_size", list(hparams["input_size"])), ("crop", hparams.get("input_crop"))):
        value = data.get(key)
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if value is not None and value != trained:
            log.warning("evaluating with data.%s=%s; %s was trained with %s", key, value, ckpt_path, trained)
        chosen.append(trained if value is None else value)
    return chosen[0], chosen[1]


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Evaluates a checkpoint on the configured verification sets; no training data is read.

    With ``cfg.export.onnx`` set, also exports the embedding network there and checks it with
    onnxruntime on the first batch of the first verification set (max abs difference of the
    L2-normalised embeddings printed).

    Returns:
        ``{set name: metrics}``, also printed and written to ``cfg.metrics_file``.
    """
    if not cfg.ckpt_path:
        raise ValueError("eval.py needs a checkpoint: python eval.py ckpt_path=/path/to/model.ckpt")
    ckpt_path = Path(cfg.ckpt_path)
    read_training_checkpoint(ckpt_path)
    model = FaceRecognitionModule.load_from_checkpoint(ckpt_path, map_location="cpu", flip_test=cfg.flip_test)
    image_size, crop = evaluation_input(cfg.data, model.hparams, ckpt_path)
    datamodule = instantiate(cfg.data, root=None, image_size=image_size, crop=crop)
    if not datamodule.val_set_paths:
        raise ValueError(
            "no verification sets configured: add data.val_sets.<name>.pairs and .images, or data.val_sets.<name>.bin"
        )
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=instantiate_all(cfg.get("logger"))
    )
    verification_callback(trainer)  # fails early, naming the missing callback
    logged = trainer.validate(model, datamodule=datamodule, verbose=False)
    results = logged_results(logged, [val_set.name for val_set in datamodule.val_sets])
    report(results, cfg.metrics_file, f"Verification of {ckpt_path}")
    export = cfg.get("export") or {}
    if export.get("onnx"):
        images, _ = next(iter(datamodule.val_dataloader()[0]))
        onnx_path = export_onnx(model.net, export.onnx, tuple(model.hparams.input_size), export.opset)
        difference = check_onnx(onnx_path, model.net, images)
        print(
            f"ONNX export {onnx_path}: max abs difference to PyTorch {difference:.3g} "
            f"(L2-normalised embeddings, {len(images)} images)"
        )
    return results
