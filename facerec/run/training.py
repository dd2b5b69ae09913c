"""``train.py``'s task: check the run directory and resume, train, verify, report."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from facerec.callbacks import RunConfigRecord
from facerec.callbacks.interrupt import interrupt_exit_status
from facerec.data.pixels import pixel_rows
from facerec.distributed import planned_rank
from facerec.eval.baseline import raw_pixel_metrics
from facerec.module.checkpoint import read_training_checkpoint
from facerec.module.face_module import without_weight_sources
from facerec.run.checks import (
    check_devices,
    check_monitor,
    check_output_dir,
    output_dirs,
    resolve_ckpt_path,
    set_sweep_group,
)
from facerec.run.components import instantiate_all, logged_results, verification_callback
from facerec.run.directory import hold_run_dir, write_records
from facerec.run.eval_options import impostor_pairs
from facerec.run.resume import check_resumed_classes, check_resumed_config
from facerec.run.tables import ResultTable, report


def train(cfg: DictConfig) -> float | None:
    """Trains as configured, evaluates the verification sets, reports; returns ``cfg.monitor``'s value or None."""
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
    callbacks = [*instantiate_all(cfg.get("callbacks")), RunConfigRecord(run_config, run_id)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_all(cfg.get("logger")))
    with planned_rank(trainer.global_rank, trainer.world_size):  # Partial FC creates only this rank's centres
        model = instantiate(cfg.model, num_classes=len(class_names), class_names=class_names, _recursive_=False)
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
            pixels = pixel_rows(val_set.images, datamodule.image_size, datamodule.crop)
            results[f"{val_set.name} (raw pixels)"] = raw_pixel_metrics(pixels, val_set)
    impostors = impostor_pairs(datamodule.val_sets)
    impostors |= {f"{name} (raw pixels)": count for name, count in impostors.items()}
    report([ResultTable("Verification on held-out identities", results, impostor_pairs=impostors)], cfg.metrics_file)
    monitored = trainer.callback_metrics.get(cfg.monitor) if cfg.monitor else None
    return None if monitored is None else float(monitored)


def check_trained(trainer: L.Trainer, start_step: int) -> None:
    """RuntimeError if ``fit`` took no optimizer step (e.g. resumed at ``max_epochs``), naming the limits."""
    if trainer.global_step <= start_step:
        raise RuntimeError(
            f"training took no step (it ended at step {trainer.global_step}, epoch {trainer.current_epoch}, "
            f"where it started): raise trainer.max_epochs (now {trainer.max_epochs}) or trainer.max_steps "
            f"(now {trainer.max_steps}) to train further"
        )


def check_checkpoints_written(trainer: L.Trainer) -> None:
    """OSError if a checkpoint a ``ModelCheckpoint`` reports is not on disk (Lightning swallows PermissionError)."""
    for callback in trainer.checkpoint_callbacks:
        for path in (callback.last_model_path, callback.best_model_path):
            if path and "://" not in path and trainer.is_global_zero and not Path(path).is_file():
                raise OSError(f"checkpoint {path} was not written: check that {Path(path).parent} is writable")


@rank_zero_only
def _write_classes(path: Path, class_names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(class_names))
