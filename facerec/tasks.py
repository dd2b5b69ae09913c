"""The importable tasks behind ``train.py`` and ``eval.py``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from facerec.callbacks import RunConfigRecord, VerificationCallback
from facerec.callbacks.interrupt import interrupt_exit_status
from facerec.eval.baseline import raw_pixel_metrics
from facerec.eval.metric import METRIC_KEYS, VerificationResult
from facerec.eval.verification import tar_at_far, threshold_at_far
from facerec.eval_options import check_threshold_set, impostor_pairs, parse_eval_options
from facerec.export import check_onnx, export_onnx
from facerec.inference import FaceEmbedder, sidecar_path
from facerec.models.checkpoint import read_training_checkpoint
from facerec.module import FaceRecognitionModule, without_weight_sources
from facerec.protocols import check_eval_sets, run_eval_sets
from facerec.resume import check_resumed_classes, check_resumed_config
from facerec.run_dir import hold_run_dir, write_records
from facerec.runs import (
    check_devices,
    check_monitor,
    check_output_dir,
    output_dirs,
    resolve_ckpt_path,
    set_sweep_group,
)
from facerec.tables import ResultTable, report

log = logging.getLogger(__name__)


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


def train(cfg: DictConfig) -> float | None:
    """Trains a model as configured, evaluates its verification sets and reports them.

    Returns:
        The value of ``cfg.monitor`` after training (for Hydra sweepers), or None if unset.
    """
    check_output_dir(cfg.paths.output_dir)
    check_devices(cfg.trainer)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)
    checkpoint = read_training_checkpoint(ckpt_path) if ckpt_path else None
    with hold_run_dir(cfg.paths.output_dir, ckpt_path is not None, checkpoint, ckpt_path):
        for path in output_dirs(cfg):
            check_output_dir(path)
        return _train(cfg, ckpt_path, checkpoint)


def _train(cfg: DictConfig, ckpt_path: str | None, checkpoint: dict | None) -> float | None:
    run_config = OmegaConf.to_container(cfg, resolve=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    check_monitor(cfg.monitor, datamodule.val_set_paths)
    datamodule.prepare_data()
    class_names = datamodule.class_names
    if checkpoint is not None:
        check_resumed_classes(checkpoint, class_names, ckpt_path)
        check_resumed_config(checkpoint, run_config, ckpt_path, force=cfg.force_resume)
    run_id = write_records(cfg.paths.output_dir, cfg)  # the run is accepted: record it
    if ckpt_path:  # the checkpoint holds the weights: don't re-read backbone.pth or timm's cache
        cfg.backbone = without_weight_sources(cfg.backbone)
    set_sweep_group(cfg)
    model = instantiate(cfg.model, num_classes=len(class_names), class_names=class_names, _recursive_=False)
    callbacks = [*instantiate_all(cfg.get("callbacks")), RunConfigRecord(run_config, run_id)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_all(cfg.get("logger")))
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)
    _write_classes(Path(cfg.paths.output_dir) / "classes.json", class_names)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
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
    impostors = impostor_pairs(datamodule.val_sets)
    impostors |= {f"{name} (raw pixels)": count for name, count in impostors.items()}
    report([ResultTable("Verification on held-out identities", results, impostor_pairs=impostors)], cfg.metrics_file)
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
    """Evaluates a checkpoint on the configured verification sets and ``eval_sets``; no training data is read.

    Verification sets (``data.val_sets``) run through ``trainer.validate`` (every process, exact under DDP);
    ``eval_sets`` (IJB-B/C template verification, 1:N search; :mod:`facerec.protocols`) run on process zero's
    device. With ``cfg.threshold_at_far`` set, the distance threshold for that false accept rate is chosen on a
    verification set (``cfg.threshold_set``, default the first). With ``cfg.export.onnx`` set, also exports the
    embedding network there, checks it with onnxruntime on the first batch of the first verification set (max
    abs difference of the L2-normalised embeddings printed) and writes its sidecar JSON (input size, crop, flip,
    threshold) beside it. Every option is parsed, every output file checked (new unless ``cfg.overwrite``) and
    the threshold set's impostor pairs counted before any evaluation (:mod:`facerec.eval_options`).

    Returns:
        ``{set name: metrics}``, also printed and written to ``cfg.metrics_file``.
    """
    if not cfg.ckpt_path:
        raise ValueError("eval.py needs a checkpoint: python eval.py ckpt_path=/path/to/model.ckpt")
    options = parse_eval_options(cfg)
    ckpt_path = Path(cfg.ckpt_path)
    model = FaceRecognitionModule.load_from_checkpoint(ckpt_path, map_location="cpu", flip_test=cfg.flip_test)
    image_size, crop = evaluation_input(cfg.data, model.hparams, ckpt_path)
    datamodule = instantiate(cfg.data, root=None, image_size=image_size, crop=crop)
    eval_sets = check_eval_sets(cfg.get("eval_sets"))
    both = sorted(set(eval_sets) & set(datamodule.val_set_paths))
    if both:
        raise ValueError(f"eval_sets and data.val_sets both name {', '.join(both)}: give each set its own name")
    if not datamodule.val_set_paths and not eval_sets:
        raise ValueError(
            "no evaluation sets configured: add data.val_sets.<name>.pairs and .images, data.val_sets.<name>.bin, "
            "+eval_sets.ijbc.root=DIR or +eval_sets.search.gallery=DIR +eval_sets.search.probe=DIR"
        )
    if datamodule.val_set_paths:  # read the pairs now: their impostors are counted before any evaluation
        datamodule.prepare_data()
        datamodule.setup("validate")
    impostors = impostor_pairs(datamodule.val_sets)
    threshold_set = check_threshold_set(options, impostors) if options.far is not None else None
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=instantiate_all(cfg.get("logger"))
    )
    results, threshold = {}, None
    if datamodule.val_set_paths:
        callback = verification_callback(trainer)  # fails early, naming the missing callback
        logged = trainer.validate(model, datamodule=datamodule, verbose=False)
        results = logged_results(logged, [val_set.name for val_set in datamodule.val_sets])
        if threshold_set is not None:
            threshold = decision_threshold(callback.results, options.far, threshold_set)
            results[threshold["set"]][f"threshold@far={threshold['far']:g}"] = threshold["distance"]
    tables = [ResultTable(f"Verification of {ckpt_path}", results, impostor_pairs=impostors)]
    if eval_sets and trainer.is_global_zero:
        embedder = FaceEmbedder(model.net, image_size, crop, cfg.flip_test).to(trainer.strategy.root_device)
        loading = {"batch_size": cfg.data.get("eval_batch_size", 64), "num_workers": cfg.data.get("num_workers", 0)}
        tables += run_eval_sets(eval_sets, embedder, Path(cfg.paths.output_dir), **loading)
    report(tables, cfg.metrics_file)
    if threshold is not None:
        print(
            f"Decision threshold at FAR <= {threshold['far']:g} on {threshold['set']}: same identity iff squared L2 "
            f"distance of the L2-normalised embeddings <= {threshold['distance']:.6g} (cosine >= "
            f"{threshold['cosine']:.6g}); TAR {threshold['tar']:.4f} there"
        )
    if options.onnx is not None:
        export_checked_onnx(model, datamodule, cfg.export, flip=cfg.flip_test, crop=crop, threshold=threshold)
    return {name: metrics for table in tables for name, metrics in table.results.items()}


def decision_threshold(
    results: Mapping[str, VerificationResult], far: float, set_name: str | None = None
) -> dict[str, Any]:
    """The decision rule for a target false accept rate, chosen on one verification set's ROC.

    Args:
        results: The verification callback's results, ``{set name: VerificationResult}``.
        far: The target false accept rate.
        set_name: The set to choose on; default the first.

    Returns:
        ``{"set", "far", "distance", "cosine", "tar"}``: "same identity" iff the squared L2 distance of the
        L2-normalised embeddings is at most ``distance`` (equivalently cosine >= ``cosine``), which accepts
        the fraction ``tar`` of the set's same pairs and at most ``far`` of its different pairs.
    """
    if not 0 < far < 1:
        raise ValueError(f"threshold_at_far={far:g}: choose a false accept rate in (0, 1), e.g. 1e-3")
    set_name = set_name or next(iter(results))
    if set_name not in results:
        raise ValueError(f"threshold_set={set_name}: no such verification set; choose one of {', '.join(results)}")
    roc = results[set_name].roc
    if roc is None:
        raise ValueError(f"verification set {set_name!r} lacks same or different pairs: no threshold can be chosen")
    distance = threshold_at_far(roc, far)
    return {
        "set": set_name,
        "far": far,
        "distance": distance,
        "cosine": 1.0 - distance / 2.0,
        "tar": tar_at_far(roc.fpr, roc.tpr, far),
    }


def export_checked_onnx(
    model: FaceRecognitionModule,
    datamodule: L.LightningDataModule,
    export: Mapping,
    flip: bool,
    crop: Any,
    threshold: dict | None,
) -> Path:
    """Exports ``model.net`` to ONNX, checks it against PyTorch and writes its sidecar JSON; returns the ONNX path."""
    images = (
        next(iter(datamodule.val_dataloader()[0]))[0]
        if datamodule.val_set_paths
        else torch.rand(4, 3, *model.hparams.input_size) * 2 - 1
    )
    onnx_path = export_onnx(model.net, export["onnx"], tuple(model.hparams.input_size), export["opset"])
    difference = check_onnx(onnx_path, model.net, images)
    print(
        f"ONNX export {onnx_path}: max abs difference to PyTorch {difference:.3g} "
        f"(L2-normalised embeddings, {len(images)} images)"
    )
    sidecar = {
        "input_size": list(model.hparams.input_size),
        "crop": crop,
        "flip": bool(flip),
        "embedding_size": int(model.hparams.embedding_size),
        "threshold": threshold,
    }
    sidecar_path(onnx_path).write_text(json.dumps(sidecar, indent=2))
    return onnx_path
